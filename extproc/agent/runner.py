"""The agent process: poll sources, build a report every interval, hand it to the publisher.

Sources poll on their own cadence in their own tasks, so one slow endpoint delays nothing else: the report
tick only reads each source's last good sample, and a sample older than stale_after is left out and named
in `stale_sources`.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable

import aiohttp

from extproc.agent.combine import combine
from extproc.agent.config import AgentConfig
from extproc.agent.nvml import NvmlReader, NvmlUnavailable
from extproc.agent.prometheus import EngineFlavour
from extproc.agent.publisher import Publisher
from extproc.agent.sources import DcgmSource, EngineSource, NvmlSource, Source
from extproc.wire.loadreport.codec import ReportRejected, encode_report, validate_report
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.loadreport.load_report_pb2 import NodeLoadReport

log = logging.getLogger(__name__)


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        *,
        nvml_factory: Callable[[], NvmlReader] = NvmlReader,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.config = config
        self.agent_id = uuid.uuid4().hex[:16]
        self.sequence = 0
        self.keys = RedisKeys(config.redis.key_prefix)
        self.publisher = Publisher(config.redis)
        self.sources: list[Source] = []
        # Sources that could not start at all (no NVML on a CPU host), with the reason; reported once.
        self.disabled: dict[str, str] = {}
        self.reports_invalid = 0
        self._nvml_factory = nvml_factory
        self._clock = clock
        self._wall_ms = wall_ms
        self._session: aiohttp.ClientSession | None = None

    @property
    def channel(self) -> str:
        """The site's own reports channel."""
        return self.keys.site_reports_channel(self.config.site)

    @property
    def key(self) -> str:
        return self.keys.report(self.config.site, self.config.node)

    # -- lifecycle --------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self._session is not None:
            return
        cfg = self.config
        timeout_s = cfg.scrape_timeout_ms / 1000.0
        # One connection per endpoint kept alive; no cookies, no env proxies (loopback/site-local scrapes).
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit_per_host=2), trust_env=False,
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        if cfg.nvml:
            reader = self._nvml_factory()
            try:
                count = await asyncio.to_thread(reader.open)
            except NvmlUnavailable as exc:
                self.disabled["nvml"] = str(exc)
                log.warning("source nvml disabled: %s (publishing the other sources)", exc)
            else:
                log.info("source nvml: %d GPU(s)", count)
                self.sources.append(NvmlSource(reader, timeout_s, self._clock))
        for url in cfg.dcgm_urls:
            self.sources.append(DcgmSource(url, self._session, timeout_s, self._clock))
        for url in cfg.vllm_urls:
            self.sources.append(EngineSource(url, EngineFlavour.vllm, self._session, timeout_s, self._clock))
        for url in cfg.sglang_urls:
            self.sources.append(EngineSource(url, EngineFlavour.sglang, self._session, timeout_s, self._clock))

    async def close(self) -> None:
        for s in self.sources:
            if isinstance(s, NvmlSource):
                s.close()
        self.sources = []
        if self._session is not None:
            await self._session.close()
            self._session = None

    # -- one report -------------------------------------------------------------------------------------
    async def poll_all(self) -> None:
        await asyncio.gather(*(s.poll() for s in self.sources))

    def build_report(self) -> NodeLoadReport | None:
        """The next report from the sources' current state; None (logged, counted) if it fails validation,
        which would be a bug here: the sources validate what they accept."""
        cfg = self.config
        now = self._clock()
        stale_s = cfg.effective_stale_after_ms / 1000.0
        self.sequence += 1
        report = combine(
            [s.state.reading(now, stale_s) for s in self.sources],
            site=cfg.site, node=cfg.node, agent_id=self.agent_id, sequence=self.sequence,
            sent_unix_ms=self._wall_ms(), interval_ms=cfg.interval_ms, ttl_ms=cfg.effective_ttl_ms,
        )
        try:
            return validate_report(report)
        except ReportRejected as exc:
            self.reports_invalid += 1
            log.error("built an invalid report, not publishing it: %s", exc)
            return None

    def publish(self, report: NodeLoadReport) -> None:
        self.publisher.offer(self.key, encode_report(report), self.config.effective_ttl_ms, self.channel)

    # -- the loop ---------------------------------------------------------------------------------------
    async def _poll_loop(self, source: Source) -> None:
        interval = self.config.interval_ms / 1000.0
        while True:
            t0 = self._clock()
            await source.poll()
            await asyncio.sleep(max(0.0, interval - (self._clock() - t0)))

    async def run(self, stop: asyncio.Event | None = None, *, max_reports: int | None = None) -> None:
        """Publish until `stop` is set (or `max_reports` reports were built). Never raises on source or
        Redis trouble."""
        stop = stop or asyncio.Event()
        await self.open()
        await self.poll_all()  # the first report already carries data
        tasks = [asyncio.create_task(self._poll_loop(s), name=f"poll:{s.name}") for s in self.sources]
        tasks.append(asyncio.create_task(self.publisher.run(), name="publisher"))
        interval = self.config.interval_ms / 1000.0
        built = 0
        try:
            next_t = self._clock()
            while not stop.is_set():
                report = self.build_report()
                if report is not None:
                    self.publish(report)
                built += 1
                if max_reports is not None and built >= max_reports:
                    break
                next_t += interval
                delay = next_t - self._clock()
                if delay < 0:  # fell behind (loop starved): resume the cadence, do not burst
                    next_t = self._clock()
                    delay = 0.0
                try:
                    await asyncio.wait_for(stop.wait(), delay)
                except asyncio.TimeoutError:
                    pass
        finally:
            self.publisher.stop()
            for t in tasks:
                t.cancel()
            # Bounded: a task that swallowed its cancellation (see Publisher.stop) must not hang shutdown.
            _, pending = await asyncio.wait(tasks, timeout=5)
            if pending:
                log.warning("tasks still running at shutdown: %s", ", ".join(t.get_name() for t in pending))
            await self.close()

    def describe(self) -> str:
        cfg = self.config
        names = [s.name for s in self.sources] + [f"{n} (disabled)" for n in self.disabled]
        return (
            f"site={cfg.site} node={cfg.node} agent_id={self.agent_id} every {cfg.interval_ms} ms "
            f"(ttl {cfg.effective_ttl_ms} ms) sources: {', '.join(names) or 'none'}"
        )
