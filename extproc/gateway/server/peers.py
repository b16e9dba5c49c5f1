"""Publishing this gateway's in-flight counts for its replicas (see `extproc.gateway.loadmap.peers`).

Every `gateway.in_flight_publish_ms` the gateway publishes how many requests it sent to each site since
that site's last report — only when the counts changed, or every `keepalive_s` while any is nonzero, so
an idle gateway sends nothing. A Redis error skips the tick (the counts are a correction, never a
reason to fail); the next tick reconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from extproc.gateway.loadmap.peers import encode_in_flight
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.redisconn.client import make_async_client
from extproc.wire.redisconn.settings import RedisSettings

log = logging.getLogger(__name__)


class InFlightPublisher:
    def __init__(
        self,
        settings: RedisSettings,
        gateway_id: str,
        counts: Callable[[], Mapping[str, int]],
        interval_s: float,
        *,
        on_tick: Callable[[], None] | None = None,
        keepalive_s: float = 0.5,
    ) -> None:
        self._settings = settings
        self._channel = RedisKeys(settings.key_prefix).in_flight_channel
        self._id = gateway_id
        self._counts = counts
        self._interval = interval_s
        self._keepalive = keepalive_s
        self._on_tick = on_tick
        self._task: asyncio.Task[None] | None = None
        self.published = 0

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="inflight-publisher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=3.0)
            self._task = None

    async def _run(self) -> None:
        client = None
        last: dict[str, int] = {}
        last_sent = -1e18
        while True:
            await asyncio.sleep(self._interval)
            if self._on_tick is not None:
                self._on_tick()
            counts = {k: v for k, v in self._counts().items() if v}
            now = time.monotonic()
            if counts == last and not (counts and now - last_sent >= self._keepalive):
                continue
            try:
                if client is None:
                    client = make_async_client(self._settings)
                await client.publish(self._channel, encode_in_flight(self._id, counts))
                last, last_sent = counts, now
                self.published += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis down: skip, reconnect on a later tick
                log.debug("in-flight publish failed: %s", exc)
                if client is not None:
                    try:
                        await client.aclose()
                    except Exception:
                        pass
                client = None
