"""Report bytes → Redis: SET the node's key with a TTL (PX), then PUBLISH the same bytes on the site's own
channel for push updates (an ACL user per site may write only its own key space and channel).

The publisher holds a single slot: offering a new report replaces one not yet sent. With Redis down the
agent therefore keeps only its latest report (memory stays flat however long the outage lasts) and sends
it as soon as a reconnect succeeds. Reconnects back off exponentially with jitter, so many agents do not
hammer a recovering Redis in lockstep.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import NoPermissionError

from extproc.wire.redisconn.settings import RedisSettings
from extproc.wire.redisconn.client import is_cluster, make_async_client, redacted_url

log = logging.getLogger(__name__)

_MIN_BACKOFF_S = 0.05


@dataclass(frozen=True, slots=True)
class Outgoing:
    key: str
    data: bytes
    ttl_ms: int
    channel: str  # the site's own reports channel (RedisKeys.site_reports_channel)


class Publisher:
    def __init__(
        self,
        settings: RedisSettings,
        *,
        client_factory: Callable[[RedisSettings], object] = make_async_client,
    ) -> None:
        self._settings = settings
        self._factory = client_factory
        self._pending: Outgoing | None = None
        self._wake = asyncio.Event()
        self._client = None
        self._connected = False
        self._backoff = _MIN_BACKOFF_S
        self._stopping = False
        # Counters (the agent logs them; tests read them).
        self.sent = 0
        self.failures = 0
        self.replaced = 0
        self.refused = 0  # refused by the Redis ACL (NOPERM)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def pending(self) -> Outgoing | None:
        return self._pending

    def offer(self, key: str, data: bytes, ttl_ms: int, channel: str) -> None:
        """Queue a report for sending, replacing any report still waiting."""
        if self._pending is not None:
            self.replaced += 1
        self._pending = Outgoing(key, data, ttl_ms, channel)
        self._wake.set()

    def stop(self) -> None:
        """Make `run()` return at its next step. Needed besides task cancellation: redis-py can swallow a
        CancelledError delivered while a command is in flight, and the loop would then wait forever."""
        self._stopping = True
        self._wake.set()

    def _should_stop(self) -> bool:
        task = asyncio.current_task()
        return self._stopping or (task is not None and task.cancelling() > 0)

    async def send(self, item: Outgoing) -> None:
        """One SET PX + PUBLISH round trip; raises on any Redis error."""
        if self._client is None:
            self._client = self._factory(self._settings)
        # SET before PUBLISH, so a reader reacting to the push finds the key in place. Not a MULTI: PUBLISH
        # has no key, so a Redis Cluster cannot put it in a slot's transaction or even its pipelines.
        if is_cluster(self._client):
            await self._client.set(item.key, item.data, px=item.ttl_ms)  # type: ignore[attr-defined]
            await self._client.publish(item.channel, item.data)  # type: ignore[attr-defined]
            return
        pipe = self._client.pipeline(transaction=False)  # type: ignore[attr-defined]
        pipe.set(item.key, item.data, px=item.ttl_ms)
        pipe.publish(item.channel, item.data)
        await pipe.execute()

    async def run(self) -> None:
        """Send whatever is pending, forever (until cancelled). Never raises on Redis errors."""
        try:
            while not self._should_stop():
                await self._wake.wait()
                if self._should_stop():
                    break
                item = self._pending
                if item is None:
                    self._wake.clear()
                    continue
                try:
                    await self.send(item)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # any Redis/network error: keep the latest report, back off
                    self.failures += 1
                    if isinstance(exc, NoPermissionError):
                        # The ACL refuses this agent's user the key or channel: a misconfigured site name
                        # or credentials of another site. Retrying will not help; say so loudly.
                        self.refused += 1
                        log.error("redis refused the report (%s): this agent's user may not write %s or %s",
                                  exc, item.key, item.channel)
                    if self._connected:
                        log.warning(
                            "redis publish failed (%s: %s); keeping only the latest report, reconnecting",
                            type(exc).__name__, exc,
                        )
                    else:
                        log.debug("redis publish failed: %s", exc)
                    self._connected = False
                    await self._drop_client()
                    await asyncio.sleep(random.uniform(self._backoff / 2, self._backoff))
                    self._backoff = min(self._settings.reconnect_max_backoff_s, self._backoff * 2)
                    continue
                if self._pending is item:
                    self._pending = None
                    self._wake.clear()
                self.sent += 1
                self._backoff = _MIN_BACKOFF_S
                if not self._connected:
                    self._connected = True
                    log.info("publishing to redis %s", redacted_url(self._settings.url))
        finally:
            await self._drop_client()

    async def _drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                await client.aclose()  # type: ignore[attr-defined]
            except Exception:
                pass
