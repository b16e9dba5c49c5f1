"""Steady open-loop load through Envoy, for fault injection and soak runs.

Open loop: requests start on a fixed schedule (`rate` per second) whatever happens to earlier ones, so a
stall in the gateway shows up as errors or latency instead of silently slowing the sender down. Every
request's outcome is kept (start, end, status, error, which site answered), so a run counts every
client-visible error. Envoy's JSON access log (`envoy.access_log: true`) tells, per request, whether
ext_proc routed it (`site` set) or Envoy failed open (`site` "-"), and which cluster served it.

The summary math (`summarize`, `recovery_s`) is pure over those records.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import aiohttp

from extproc.tools.percentile import percentile


@dataclass(frozen=True, slots=True)
class Outcome:
    start: float  # wall clock (time.time()), comparable with Envoy's access log
    end: float
    status: int  # 0: no HTTP answer (connection error, reset, timeout)
    error: str = ""
    served_by: str = ""  # the site's own answer header (stand-ins: x-served-by), else ""

    @property
    def ok(self) -> bool:
        return self.status == 200 and not self.error


@dataclass(frozen=True, slots=True)
class AccessEntry:
    start: float
    status: int
    site: str  # x-aigrid-site as ext_proc set it; "-" when Envoy failed open
    cluster: str  # upstream cluster that served it; "-" when none did
    flags: str


@dataclass
class Summary:
    sent: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    p50_ms: float
    p99_ms: float
    unrouted: int = 0  # reached a site but ext_proc did not route it (failed open)
    no_site: int = 0  # Envoy served it from no upstream cluster
    by_cluster: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        kinds = ", ".join(f"{k}: {v}" for k, v in sorted(self.error_kinds.items())) or "none"
        return (
            f"sent {self.sent}, ok {self.ok}, client errors {self.errors} ({kinds}), failed open {self.unrouted}, "
            f"reached no site {self.no_site}, p50 {self.p50_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        )


def _quantile(values: Sequence[float], q: float) -> float:
    return percentile(values, 100 * q, "nearest") or 0.0


def summarize(outcomes: Sequence[Outcome], access: Sequence[AccessEntry] = ()) -> Summary:
    kinds: dict[str, int] = {}
    for o in outcomes:
        if not o.ok:
            k = o.error or f"http_{o.status}"
            kinds[k] = kinds.get(k, 0) + 1
    lat = [(o.end - o.start) * 1000 for o in outcomes if o.ok]
    by_cluster: dict[str, int] = {}
    for a in access:
        by_cluster[a.cluster] = by_cluster.get(a.cluster, 0) + 1
    return Summary(
        sent=len(outcomes),
        ok=sum(o.ok for o in outcomes),
        errors=sum(not o.ok for o in outcomes),
        error_kinds=kinds,
        p50_ms=_quantile(lat, 0.50),
        p99_ms=_quantile(lat, 0.99),
        unrouted=sum(a.site == "-" for a in access),
        no_site=sum(a.cluster == "-" for a in access),
        by_cluster=by_cluster,
    )


def recovery_s(fault_at: float, outcomes: Sequence[Outcome], access: Sequence[AccessEntry]) -> float:
    """Seconds from the fault to the last request that was not served normally (a client error, or a
    request Envoy failed open on); 0 when none was affected."""
    bad = [o.start for o in outcomes if not o.ok and o.start >= fault_at - 1]
    bad += [a.start for a in access if a.site == "-" and a.start >= fault_at - 1]
    return max(0.0, max(bad) - fault_at) if bad else 0.0


def _iso(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def read_access_log(path: Path, since: float = 0.0, paths: Iterable[str] = ("/v1/",)) -> list[AccessEntry]:
    """The JSON access-log lines of Envoy's log file (other lines skipped), for requests under `paths`."""
    out: list[AccessEntry] = []
    prefixes = tuple(paths)
    for line in path.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            d = json.loads(line)
        except ValueError:
            continue
        if not str(d.get("path", "")).startswith(prefixes):
            continue
        start = _iso(d["start"])
        if start < since:
            continue
        out.append(
            AccessEntry(start, int(d.get("status") or 0), str(d.get("site") or "-"), str(d.get("cluster") or "-"),
                        str(d.get("flags") or "-"))
        )
    return out


class OpenLoop:
    """`rate` requests per second to `url` from a thread of its own, until `stop()`; outcomes in order.
    `body` is the same bytes every time, or a function of the request's sequence number (distinct prompts:
    no conversation affinity between them)."""

    def __init__(
        self,
        url: str,
        body: bytes | Callable[[int], bytes],
        rate: float,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        self.url, self.body, self.rate = url, body, rate
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.timeout_s = timeout_s
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="aigrid-openloop", daemon=True)
        self.started_at = 0.0

    def start(self) -> "OpenLoop":
        self.started_at = time.time()
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self._stop.set()
        self._thread.join(self.timeout_s + 10)
        return sorted(self.outcomes, key=lambda o: o.start)

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _one(self, session: aiohttp.ClientSession, seq: int) -> None:
        body = self.body(seq) if callable(self.body) else self.body
        t0 = time.time()
        try:
            async with session.post(self.url, data=body, headers=self.headers) as r:
                await r.read()
                self.outcomes.append(Outcome(t0, time.time(), r.status, "", r.headers.get("x-served-by", "")))
        except asyncio.TimeoutError:
            self.outcomes.append(Outcome(t0, time.time(), 0, "timeout"))
        except aiohttp.ClientError as exc:
            self.outcomes.append(Outcome(t0, time.time(), 0, type(exc).__name__))

    async def _main(self) -> None:
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        # A fresh connection per request would measure connect storms; a pool as clients keep one.
        conn = aiohttp.TCPConnector(limit=0)
        tasks: set[asyncio.Task[None]] = set()
        async with aiohttp.ClientSession(timeout=timeout, connector=conn) as session:
            period = 1.0 / self.rate
            t_next = time.monotonic()
            seq = 0
            while not self._stop.is_set():
                t = asyncio.create_task(self._one(session, seq))
                seq += 1
                tasks.add(t)
                t.add_done_callback(tasks.discard)
                t_next += period
                await asyncio.sleep(max(0.0, t_next - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout_s + 5)
