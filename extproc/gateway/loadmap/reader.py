"""Redis → in-memory load snapshot. The adapter between Redis and the pure load-map functions.

Pushes arrive on each site's own channel (`<prefix>:reports:<site>`, one PSUBSCRIBE); a full read (SCAN +
GET/PTTL) every resync interval repairs anything a lost message or a reconnect missed, and drops nodes
whose keys expired.

Ownership: with the shipped ACL (`deploy/redis/users.acl`) each site's agent may write only its own key
space and channel, so Redis refuses a report for another site. The reader checks the same thing itself
and counts each refusal by reason (`refused`): a report on one site's channel that names another site
(`wrong_channel`), a key that holds another node's report (`wrong_key`), and a push on the shared channel
of agents from before per-site channels that is not what its site's key holds (`not_its_key`). That
shared channel is still read while `redis.read_shared_reports_channel` is on (an upgrade), but only as
a hint: the reader applies the site's own key, which only that site's agent can write.

The request path only ever reads `reader.snapshot`, an immutable object swapped whole: it never waits on Redis. With Redis down the
last snapshot stays in place, ages, and the policy treats it as stale once it passes `stale_after_s`.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
from collections.abc import Callable

from extproc.gateway.loadmap.aggregate import aggregate
from extproc.gateway.loadmap.model import LoadSnapshot, NodeLoad
from extproc.gateway.loadmap.nodes import (
    age_from_ttl,
    apply_report,
    drop_expired,
    is_newer,
    node_from_report,
)
from extproc.gateway.loadmap.peers import (
    PeerMessageRejected,
    PeerTable,
    decode_in_flight,
)
from extproc.wire.loadreport.codec import ReportRejected, decode_report
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.redisconn.client import make_async_client, redacted_url
from extproc.wire.redisconn.settings import RedisSettings

log = logging.getLogger(__name__)


class LoadMapReader:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[LoadSnapshot], None] | None = None,
        peers: PeerTable | None = None,
        on_peers: Callable[[dict[str, int]], None] | None = None,
    ) -> None:
        self._settings = settings
        # Other gateways' in-flight counts (subscribed only when a table is given).
        self._peers = peers
        self._on_peers = on_peers
        self._keys = RedisKeys(settings.key_prefix)
        self._clock = clock
        self._on_change = on_change
        self._nodes: dict[tuple[str, str], NodeLoad] = {}
        self._drained: frozenset[str] = frozenset()
        self._measured_rtt: dict[str, float] = {}
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._last_reject_log: dict[str, float] = {}
        self.snapshot = LoadSnapshot()
        # Counters, exposed as gateway metrics.
        self.reports_accepted = 0
        self.reports_rejected = 0
        # Reports refused because their channel or key does not belong to the site they name (by reason).
        self.refused: collections.Counter[str] = collections.Counter()
        self.resyncs = 0
        self.reconnects = 0

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="loadmap-reader")

    async def stop(self, timeout_s: float = 3.0) -> None:
        """Stop the reader. Bounded: redis-py can swallow a cancellation that lands mid-command, so the
        loop also checks a flag, and stop() gives up waiting after `timeout_s` rather than hang a drain."""
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            done, _ = await asyncio.wait({self._task}, timeout=timeout_s)
            if not done:
                log.warning("load map reader did not stop within %.1fs; abandoning it", timeout_s)
            self._task = None

    @property
    def connected(self) -> bool:
        return self._connected

    def set_measured_rtt(self, site: str, rtt_ms: float | None) -> None:
        """Fed by the gateway's RTT probe; None forgets a measurement (probe failed)."""
        if rtt_ms is None:
            self._measured_rtt.pop(site, None)
        else:
            self._measured_rtt[site] = rtt_ms
        self._publish_snapshot()

    # -- snapshot ---------------------------------------------------------------------------------------
    def _publish_snapshot(self) -> None:
        now = self._clock()
        self._nodes = drop_expired(self._nodes, now)
        self.snapshot = LoadSnapshot(
            sites=aggregate(self._nodes.values(), now),
            drained=self._drained,
            built_at=now,
            connected=self._connected,
            measured_rtt_ms=dict(self._measured_rtt),
        )
        if self._on_change is not None:
            try:
                self._on_change(self.snapshot)
            except Exception:  # a listener's bug must not stop the map
                log.exception("load map listener failed")

    def _rejected(self, where: str, why: str, refusal: str | None = None) -> None:
        self.reports_rejected += 1
        if refusal is not None:
            self.refused[refusal] += 1
        now = self._clock()
        # One log line per source per minute: a misbehaving writer must not flood the log.
        if now - self._last_reject_log.get(where, -1e9) >= 60.0:
            self._last_reject_log[where] = now
            log.warning("load report rejected (%s): %s", where, why)

    def ingest(self, data: bytes, where: str, age_s: float = 0.0, *, site: str | None = None) -> bool:
        """Apply one report's bytes; returns whether the map changed. Never raises on bad input.
        `site`: the site whose channel carried it; a report naming another site is refused."""
        try:
            report = decode_report(data)
        except ReportRejected as exc:
            self._rejected(where, str(exc))
            return False
        if site is not None and report.site != site:
            # `where` stays "pubsub": the log's rate limit is per source, and channel names are the writer's.
            self._rejected(where, f"a report for site {report.site!r} on the channel of {site[:64]!r}", "wrong_channel")
            return False
        self._nodes, changed = apply_report(self._nodes, report, self._clock() - age_s)
        if changed:
            self.reports_accepted += 1
        return changed

    async def _ingest_shared(self, client, data: bytes) -> bool:  # type: ignore[no-untyped-def]
        """A push on the shared channel (an agent from before per-site channels): anyone allowed on that
        channel could name any site there, so the push only says which key to read; the key (which only
        the site's own agent can write) is what is applied."""
        try:
            report = decode_report(data)
        except ReportRejected as exc:
            self._rejected("pubsub", str(exc))
            return False
        key = self._keys.report(report.site, report.node)
        stored = await client.get(key)
        if stored != data:
            self._rejected("shared channel", f"a report for {report.site}/{report.node} that its key does not hold",
                           "not_its_key")
        if stored is None:
            return False
        # `where` stays "shared channel" (the key's name comes from the push): the log's rate limit is per source.
        try:
            held = decode_report(stored)
        except ReportRejected as exc:
            self._rejected("shared channel", f"{key}: {exc}")
            return False
        if key != self._keys.report(held.site, held.node):
            self._rejected("shared channel", f"{key} does not match its report ({held.site}/{held.node})", "wrong_key")
            return False
        self._nodes, changed = apply_report(self._nodes, held, self._clock())
        if changed:
            self.reports_accepted += 1
        return changed

    def _ingest_peer(self, data: bytes) -> None:
        assert self._peers is not None
        try:
            gid, counts = decode_in_flight(data)
        except PeerMessageRejected as exc:
            self._rejected("inflight", str(exc))
            return
        now = self._clock()
        if self._peers.update(gid, counts, now) and self._on_peers is not None:
            self._on_peers(self._peers.totals(now))

    def peer_totals(self) -> dict[str, int]:
        """Live peers' summed counts now (silent peers expire even when no message arrives)."""
        return {} if self._peers is None else self._peers.totals(self._clock())

    # -- Redis side -------------------------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        while not self._stopping:
            client = make_async_client(self._settings)
            try:
                await self._session(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any Redis or network error: keep the snapshot, retry
                if self._connected:
                    log.warning("redis connection lost (%s); serving on the last load snapshot", exc)
                else:
                    log.debug("redis not reachable: %s", exc)
            finally:
                was = self._connected
                self._connected = False
                if was:
                    self._publish_snapshot()
                try:
                    await client.aclose()
                except Exception:
                    pass
            self.reconnects += 1
            # Exponential backoff with full jitter, so many gateways don't reconnect in lockstep.
            await asyncio.sleep(random.uniform(0, backoff))
            backoff = min(self._settings.reconnect_max_backoff_s, backoff * 2)
            if self._connected:
                backoff = 0.1

    async def _session(self, client) -> None:  # type: ignore[no-untyped-def]
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        try:
            channels = [self._keys.control_channel]
            if self._settings.read_shared_reports_channel:
                channels.append(self._keys.reports_channel)
            if self._peers is not None:
                channels.append(self._keys.in_flight_channel)
            await pubsub.subscribe(*channels)
            await pubsub.psubscribe(self._keys.site_reports_pattern)
            await self.resync(client)
            if not self._connected:
                log.info("redis connected: %s", redacted_url(self._settings.url))
            self._connected = True
            self._publish_snapshot()
            next_resync = self._clock() + self._settings.resync_interval_s
            while not self._stopping:
                timeout = max(0.0, next_resync - self._clock())
                msg = await pubsub.get_message(timeout=min(timeout, 1.0))
                if msg is not None and msg.get("type") in ("message", "pmessage"):
                    channel = msg["channel"]
                    if isinstance(channel, bytes):
                        channel = channel.decode("utf-8", "replace")
                    if msg["type"] == "pmessage":
                        site = self._keys.site_of_reports_channel(channel)
                        if site is not None and self.ingest(msg["data"], "pubsub", site=site):
                            self._publish_snapshot()
                    elif channel == self._keys.reports_channel:
                        if await self._ingest_shared(client, msg["data"]):
                            self._publish_snapshot()
                    elif channel == self._keys.control_channel:
                        await self._read_drained(client)
                        self._publish_snapshot()
                    elif channel == self._keys.in_flight_channel:
                        self._ingest_peer(msg["data"])
                if self._clock() >= next_resync:
                    await self.resync(client)
                    self._publish_snapshot()
                    next_resync = self._clock() + self._settings.resync_interval_s
        finally:
            try:
                await pubsub.aclose()
            except Exception:
                pass

    async def read_once(self) -> LoadSnapshot:
        """One full read without subscribing (for `aigrid status`); raises on Redis errors."""
        client = make_async_client(self._settings)
        try:
            await self.resync(client)
            self._connected = True
            self._publish_snapshot()
            return self.snapshot
        finally:
            await client.aclose()

    async def _read_drained(self, client) -> None:  # type: ignore[no-untyped-def]
        members = await client.smembers(self._keys.drained)
        self._drained = frozenset(
            m.decode("utf-8", "replace") if isinstance(m, bytes) else str(m) for m in members
        )

    async def resync(self, client) -> None:  # type: ignore[no-untyped-def]
        """Full read of every report key; nodes whose keys are gone drop out."""
        keys: list[bytes] = []
        async for k in client.scan_iter(match=self._keys.report_pattern, count=1000):
            keys.append(k)
        present: set[tuple[str, str]] = set()
        if keys:
            pipe = client.pipeline(transaction=False)
            for k in keys:
                pipe.get(k)
                pipe.pttl(k)
            values = await pipe.execute()
            for i, k in enumerate(keys):
                data, pttl = values[2 * i], values[2 * i + 1]
                where = k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k)
                if data is None:
                    continue  # expired between SCAN and GET
                try:
                    report = decode_report(data)
                except ReportRejected as exc:
                    self._rejected(where, str(exc))
                    continue
                if where != self._keys.report(report.site, report.node):
                    self._rejected(where, f"key does not match its report ({report.site}/{report.node})", "wrong_key")
                    continue
                present.add((report.site, report.node))
                current = self._nodes.get((report.site, report.node))
                if is_newer(current, report.agent_id, report.sequence):
                    age = age_from_ttl(report.ttl_ms, int(pttl) if pttl is not None else -1)
                    self._nodes[(report.site, report.node)] = node_from_report(report, self._clock() - age)
                    self.reports_accepted += 1
        self._nodes = {k: v for k, v in self._nodes.items() if k in present}
        await self._read_drained(client)
        self.resyncs += 1
