"""Measured RTT to each site: a cheap periodic GET of the site's health endpoint, smoothed, fed to the map.

The probe goes where Envoy's upstream connections go (by default the site's first endpoint and its
`health_path`, i.e. the address Envoy's cluster dials from this host), over a kept-alive connection, so
what it times is the request round trip on the traffic's path rather than a TCP handshake. A URL per
site can be given instead (e.g. a route through a local Envoy, or a different health port).

Smoothing (pure, below): an EWMA over successful samples; a failed probe keeps the last estimate until
`max_failures` probes in a row failed, then the measurement is withdrawn (None) so the configured RTT
applies again instead of a stale number.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import aiohttp

from extproc.gateway.config.schema import GatewayConfig

log = logging.getLogger(__name__)

RttSink = Callable[[str, "float | None"], None]


# -- functional core -----------------------------------------------------------------------------------
def ewma(prev: float | None, sample: float, alpha: float) -> float:
    """Exponentially weighted moving average; the first sample is taken as is."""
    if not 0.0 < alpha <= 1.0:
        raise ValueError("alpha must be in (0, 1]")
    if prev is None:
        return sample
    return prev + alpha * (sample - prev)


@dataclass(frozen=True, slots=True)
class RttEstimate:
    ms: float | None = None
    failures: int = 0  # consecutive failed probes
    samples: int = 0


def update_estimate(est: RttEstimate, sample_ms: float | None, alpha: float, max_failures: int) -> RttEstimate:
    """Next estimate after one probe (sample_ms None = the probe failed)."""
    if sample_ms is None:
        failures = est.failures + 1
        return RttEstimate(None if failures >= max_failures else est.ms, failures, est.samples)
    return RttEstimate(ewma(est.ms, sample_ms, alpha), 0, est.samples + 1)


def probe_urls(config: GatewayConfig, overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """Per site: the override if given, else http://<first endpoint><health_path>."""
    out: dict[str, str] = {}
    for s in config.sites:
        if overrides and s.name in overrides:
            out[s.name] = overrides[s.name]
        else:
            path = s.health_path if s.health_path.startswith("/") else "/" + s.health_path
            out[s.name] = f"http://{s.endpoints[0]}{path}"
    return out


# -- adapter -------------------------------------------------------------------------------------------
class RttProbe:
    """Usage in `aigrid serve`:

        probe = RttProbe(config, reader.set_measured_rtt)
        probe.start()          # inside the running event loop
        ...
        await probe.stop()
    """

    def __init__(
        self,
        config: GatewayConfig,
        sink: RttSink,
        *,
        urls: Mapping[str, str] | None = None,
        interval_s: float = 2.0,
        timeout_s: float = 1.0,
        alpha: float = 0.3,
        max_failures: int = 3,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        if interval_s <= 0 or timeout_s <= 0:
            raise ValueError("interval_s and timeout_s must be > 0")
        ewma(None, 0.0, alpha)  # validates alpha early
        self.urls = probe_urls(config, urls)
        self._sink = sink
        self._interval = interval_s
        self._timeout = timeout_s
        self._alpha = alpha
        self._max_failures = max_failures
        self._clock = clock
        self.estimates: dict[str, RttEstimate] = {site: RttEstimate() for site in self.urls}
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_error: dict[str, str] = {}

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="rtt-probe")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _measure(self, url: str) -> float:
        """One GET; ms until the answer's headers plus its (small) body. Raises on failure."""
        if self._session is None:
            # One kept-alive connection per site; no env proxies (the probe must take the traffic's path).
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit_per_host=1), trust_env=False,
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        t0 = self._clock()
        async with self._session.get(url, timeout=aiohttp.ClientTimeout(total=self._timeout)) as resp:
            await resp.content.read(64 * 1024)
            elapsed_ms = (self._clock() - t0) * 1000.0
            # A 5xx may come from a proxy in front of a dead site: that is not the site's RTT.
            if resp.status >= 500:
                raise RuntimeError(f"HTTP {resp.status}")
        return elapsed_ms

    async def probe_once(self) -> dict[str, float | None]:
        """Probe every site once (concurrently), update the estimates, push them to the sink."""
        sites = list(self.urls)
        results = await asyncio.gather(*(self._measure(self.urls[s]) for s in sites), return_exceptions=True)
        out: dict[str, float | None] = {}
        for site, res in zip(sites, results):
            sample: float | None
            if isinstance(res, BaseException):
                if isinstance(res, asyncio.CancelledError):
                    raise res
                sample = None
                reason = f"{type(res).__name__}: {res}"
                if self._last_error.get(site) != reason:
                    log.warning("rtt probe %s (%s) failed: %s", site, self.urls[site], reason)
                    self._last_error[site] = reason
            else:
                sample = res
                self._last_error.pop(site, None)
            est = update_estimate(self.estimates[site], sample, self._alpha, self._max_failures)
            self.estimates[site] = est
            out[site] = est.ms
            try:
                self._sink(site, est.ms)
            except Exception:  # the map's bug must not stop the probe
                log.exception("rtt sink failed")
        return out

    async def _run(self) -> None:
        while True:
            t0 = time.monotonic()
            try:
                await self.probe_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("rtt probe round failed")
            await asyncio.sleep(max(0.0, self._interval - (time.monotonic() - t0)))
