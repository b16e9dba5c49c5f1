"""The agent's sources: thin adapters that poll one thing and record the outcome in a SourceState.

Every poll is bounded (scrape deadline, body size) and never raises: a failure is recorded with its reason
and the source goes stale once its last good sample is older than the agent's stale_after.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import aiohttp

from extproc.agent.combine import SourceKind, SourceState
from dataclasses import replace

from extproc.agent.dcgm import parse_dcgm
from extproc.agent.models import models_url, parse_models
from extproc.agent.nvml import NvmlReader
from extproc.agent.prometheus import MAX_TEXT_BYTES, EngineFlavour, MetricsRejected, parse_engine

log = logging.getLogger(__name__)


class ScrapeError(RuntimeError):
    pass


async def fetch_text(session: aiohttp.ClientSession, url: str, timeout_s: float) -> str:
    """GET a metrics page. Raises ScrapeError with a reason (status, timeout, too large, cut off, not UTF-8)."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            if resp.status != 200:
                raise ScrapeError(f"HTTP {resp.status}")
            chunks: list[bytes] = []
            size = 0
            async for chunk in resp.content.iter_chunked(64 * 1024):
                size += len(chunk)
                if size > MAX_TEXT_BYTES:
                    raise ScrapeError(f"metrics page larger than {MAX_TEXT_BYTES} bytes")
                chunks.append(chunk)
    except asyncio.TimeoutError:
        raise ScrapeError(f"no complete answer within {timeout_s:.3g} s") from None
    except aiohttp.ClientPayloadError as exc:  # connection closed before Content-Length was reached
        raise ScrapeError(f"truncated response: {exc}") from None
    except aiohttp.ClientError as exc:
        raise ScrapeError(f"{type(exc).__name__}: {exc}") from None
    try:
        return b"".join(chunks).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScrapeError(f"metrics page is not UTF-8: {exc}") from None


class Source:
    """Base: a name, a state, and `poll()` that updates the state."""

    def __init__(self, name: str, kind: SourceKind, clock: Callable[[], float]) -> None:
        self.state = SourceState(name, kind)
        self._clock = clock
        # Log a failure when the source turns bad and when the reason changes, not on every poll.
        self._logged_error: str | None = None

    @property
    def name(self) -> str:
        return self.state.name

    async def poll(self) -> None:
        raise NotImplementedError

    def _ok(self, **kwargs) -> None:  # type: ignore[no-untyped-def]
        if self._logged_error is not None:
            log.info("source %s recovered", self.name)
            self._logged_error = None
        self.state.ok(self._clock(), **kwargs)

    def _failed(self, reason: str) -> None:
        self.state.failed(reason)
        if reason != self._logged_error:
            log.warning("source %s: %s", self.name, reason)
            self._logged_error = reason


class EngineSource(Source):
    # Model lists change on a redeploy, not per report: fetched this often, the last good one reused.
    MODELS_INTERVAL_S = 30.0

    def __init__(
        self, url: str, flavour: EngineFlavour, session: aiohttp.ClientSession, timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"{flavour.value}:{url}", SourceKind.engine, clock)
        self.url, self.flavour, self._session, self._timeout = url, flavour, session, timeout_s
        self._models_url = models_url(url)
        self._models: tuple[str, ...] = ()
        self._models_at: float | None = None

    async def _refresh_models(self) -> None:
        now = self._clock()
        if self._models_at is not None and now - self._models_at < self.MODELS_INTERVAL_S:
            return
        self._models_at = now
        try:
            models = parse_models((await fetch_text(self._session, self._models_url, self._timeout)).encode())
        except ScrapeError as exc:
            log.info("source %s: model list unavailable (%s); keeping %d known", self.name, exc, len(self._models))
            return
        if models is not None:
            self._models = models

    async def poll(self) -> None:
        try:
            text = await fetch_text(self._session, self.url, self._timeout)
            sample = parse_engine(text, self.flavour)
        except (ScrapeError, MetricsRejected) as exc:
            self._failed(str(exc))
            return
        # A model list that cannot be read leaves the load figures valid: never a reason to fail.
        await self._refresh_models()
        self._ok(engine=replace(sample, models=self._models))


class DcgmSource(Source):
    def __init__(
        self, url: str, session: aiohttp.ClientSession, timeout_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(f"dcgm:{url}", SourceKind.gpu, clock)
        self.url, self._session, self._timeout = url, session, timeout_s

    async def poll(self) -> None:
        try:
            text = await fetch_text(self._session, self.url, self._timeout)
            gpus = parse_dcgm(text)
        except (ScrapeError, MetricsRejected) as exc:
            self._failed(str(exc))
            return
        self._ok(gpus=gpus)


class NvmlSource(Source):
    def __init__(self, reader: NvmlReader, timeout_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__("nvml", SourceKind.gpu, clock)
        self._reader = reader
        self._timeout = timeout_s
        self._inflight: asyncio.Future | None = None

    async def poll(self) -> None:
        # NVML calls block in the driver; they run in a thread. A call that hangs (a wedged GPU) is not
        # started again until it returns, so threads cannot pile up.
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(asyncio.to_thread(self._reader.sample))
        try:
            gpus = await asyncio.wait_for(asyncio.shield(self._inflight), self._timeout)
        except asyncio.TimeoutError:
            self._failed(f"NVML did not answer within {self._timeout:.3g} s")
            return
        except Exception as exc:  # pynvml.NVMLError (GPU lost, driver reset) or anything else from NVML
            self._failed(f"NVML query failed: {type(exc).__name__}: {exc}")
            return
        self._ok(gpus=gpus)

    def close(self) -> None:
        self._reader.close()
