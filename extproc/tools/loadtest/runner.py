"""The load test's I/O: an aiohttp client driving planned requests through Envoy, Envoy admin stats before
and after, and samplers of the sites' and the gateway's /metrics. All math lives in `stats`, all parsing
in `sse`; this module only moves bytes and reads the clock.

Bounds: the plan is bounded (request count and/or duration), in-flight requests are capped, each request
has a deadline, and the drain after the last send is bounded by that deadline. Loopback only by default:
a load generator pointed at someone else's host by a typo is a denial of service.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from extproc.tools.loadtest import stats as S
from extproc.tools.loadtest.sse import SseParser, StreamStats
from extproc.tools.loadtest.workloads import (
    REQUEST_ID_HEADER,
    LoadSpec,
    PlannedRequest,
    plan,
)
from extproc.tools.tokens import (
    count_chat,  # the sites' own prompt-token count (cl100k, offline)
)

ERROR_BODY_LIMIT = 2048
PROBE_TIMEOUT_S = 3.0


class LoadTestError(RuntimeError):
    """A problem with the setup (unreachable endpoint, bad address) that stops the load test."""


@dataclass
class Endpoints:
    url: str = "http://127.0.0.1:10000"  # Envoy listener
    admin: str = "http://127.0.0.1:9901"  # Envoy admin
    gateway_metrics: list[str] = field(default_factory=list)  # aigrid serve /metrics URLs
    site_metrics: dict[str, str] = field(default_factory=dict)  # site → its /metrics URL (vLLM + DCGM names)
    # site → Envoy cluster; None: discovered from the admin stats (`cluster.site_<name>.*`).
    site_clusters: dict[str, str] | None = None
    allow_remote: bool = False


@dataclass
class LoadResult:
    name: str
    spec: dict[str, Any]
    endpoints: dict[str, Any]
    started_unix: float
    window_s: float
    records: list[dict[str, Any]]
    dropped: int
    site_clusters: dict[str, str]
    envoy_sites: dict[str, dict[str, int]]  # per-site Envoy counters (after − before)
    envoy_extproc: dict[str, int]  # ext_proc counters (after − before)
    gateway_counters: dict[str, float]  # aigrid_* counters (after − before), summed over gateways
    site_counters: dict[str, dict[str, float | None]]  # per-site vLLM token counters (after − before)
    site_samples: list[dict[str, Any]]  # {t, site, fb_used_mib, kv_usage, running, waiting, ...}
    gateway_samples: list[dict[str, Any]]  # {t, pressure: {site: v}}
    sampler_errors: dict[str, int]
    summary: dict[str, Any]
    retention: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # The simulated sites' own timing verdict over the run (stats.sim_validity); None: not checked.
    sim_timing: dict[str, Any] | None = None

    @property
    def valid(self) -> bool:
        """False when a simulated site fell behind real time during the run: do not quote it."""
        return self.sim_timing is None or bool(self.sim_timing.get("valid", True))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "LoadResult":
        return cls(**d)


# ---- endpoint checks -----------------------------------------------------------------------------------
def _check_url(what: str, url: str, allow_remote: bool) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise LoadTestError(f"{what}: {url!r} is not an http:// URL")
    if allow_remote:
        return
    host = parts.hostname
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise LoadTestError(f"{what}: {url} is not a loopback address; pass --allow-remote to load-test your own deployment")


async def _get_text(session: aiohttp.ClientSession, url: str, timeout: float = PROBE_TIMEOUT_S) -> str:
    async with session.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as r:
        if r.status != 200:
            raise LoadTestError(f"HTTP {r.status}")
        return await r.text()


async def _probe(session: aiohttp.ClientSession, what: str, url: str) -> str:
    try:
        return await _get_text(session, url)
    except LoadTestError as exc:
        raise LoadTestError(f"{what} at {url}: {exc}") from None
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
        reason = str(exc) or type(exc).__name__
        raise LoadTestError(f"{what} at {url} is unreachable: {reason}") from None


def _admin_stats_url(admin: str) -> str:
    return admin.rstrip("/") + "/stats?format=json"


async def _envoy_stats(session: aiohttp.ClientSession, admin: str) -> dict[str, int]:
    text = await _probe(session, "Envoy admin", _admin_stats_url(admin))
    try:
        doc = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise LoadTestError(f"Envoy admin at {admin}: /stats?format=json did not return JSON (is this Envoy's admin port?)") from None
    if not isinstance(doc, dict) or "stats" not in doc:
        raise LoadTestError(f"Envoy admin at {admin}: /stats?format=json has no 'stats' (is this Envoy's admin port?)")
    return S.envoy_stats_map(doc)


async def _listener_open(url: str) -> None:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        _, w = await asyncio.wait_for(asyncio.open_connection(parts.hostname, port), PROBE_TIMEOUT_S)
        w.close()
    except (OSError, asyncio.TimeoutError) as exc:
        raise LoadTestError(f"Envoy listener at {url} is unreachable: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc or 'timeout'}") from None


# ---- one request ---------------------------------------------------------------------------------------
async def send_one(session: aiohttp.ClientSession, base_url: str, path: str, p: PlannedRequest, t0: float, timeout_s: float) -> dict[str, Any]:
    """Send one planned request; return its record. Never raises for request-level failures."""
    rec: dict[str, Any] = {
        "id": p.request_id, "index": p.index, "kind": p.kind, "sla": p.sla, "lang": p.lang,
        "conversation": p.conversation, "turn": p.turn, "est_prompt_tokens": p.est_prompt_tokens,
        # The prompt as the client sent it, in the sites' tokenizer (cl100k): what a served request is
        # worth, whatever the gateway did to it on the way (compression shrinks `usage.prompt_tokens`).
        "sent_prompt_tokens": count_chat(p.body.get("messages") or []),
        "max_tokens": p.body.get("max_tokens"), "gold": p.gold,
        "scheduled_s": p.at_s, "sent_s": None, "status": None, "ok": False, "streamed": False,
        "ttft_s": None, "e2e_s": None, "itl_mean_s": None, "itl_p95_s": None, "content_events": 0,
        "prompt_tokens": None, "completion_tokens": None, "served_by": None, "error_kind": None, "error": None,
    }
    body = orjson.dumps(p.body)
    headers = {"content-type": "application/json", **p.headers}
    start = time.perf_counter()
    rec["sent_s"] = start - t0
    try:
        async with session.post(base_url.rstrip("/") + path, data=body, headers=headers,
                                timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
            rec["status"] = resp.status
            rec["served_by"] = resp.headers.get("x-served-by")
            ctype = resp.headers.get("content-type", "")
            if resp.status != 200:
                rec["error_kind"] = "http"
                rec["error"] = (await resp.content.read(ERROR_BODY_LIMIT)).decode("utf-8", "replace")
            elif ctype.startswith("text/event-stream"):
                rec["streamed"] = True
                parser = SseParser()
                st = StreamStats()
                async for chunk in resp.content.iter_any():
                    now = time.perf_counter()
                    for data in parser.feed(chunk):
                        st.on_event(data, now)
                for data in parser.close():
                    st.on_event(data, time.perf_counter())
                if st.first_token_t is not None:
                    rec["ttft_s"] = st.first_token_t - start
                if st.gaps:
                    rec["itl_mean_s"] = sum(st.gaps) / len(st.gaps)
                    rec["itl_p95_s"] = S.percentile(st.gaps, 95)
                rec["content_events"] = st.content_events
                _usage(rec, st.usage)
                if st.error:
                    rec["error_kind"], rec["error"] = "stream_error", st.error[:ERROR_BODY_LIMIT]
                elif not st.done:
                    rec["error_kind"], rec["error"] = "truncated", "stream ended without [DONE]"
                else:
                    rec["ok"] = True
            else:
                # A non-streaming JSON answer (a stand-in site, or a server that ignores `stream`):
                # only end-to-end time is measurable.
                raw = await resp.read()
                try:
                    obj = orjson.loads(raw)
                    _usage(rec, obj.get("usage") if isinstance(obj, dict) else None)
                    rec["ok"] = True
                except orjson.JSONDecodeError:
                    rec["error_kind"], rec["error"] = "bad_json", raw[:200].decode("utf-8", "replace")
    except asyncio.TimeoutError:
        rec["error_kind"], rec["error"] = "timeout", f"no complete answer within {timeout_s:g}s"
    except (aiohttp.ClientError, OSError) as exc:
        rec["error_kind"], rec["error"] = "connection", str(exc) or type(exc).__name__
    rec["e2e_s"] = time.perf_counter() - start
    return rec


def _usage(rec: dict[str, Any], usage: Any) -> None:
    if isinstance(usage, dict):
        rec["prompt_tokens"] = usage.get("prompt_tokens")
        rec["completion_tokens"] = usage.get("completion_tokens")


# ---- samplers ------------------------------------------------------------------------------------------
async def _scrape(session: aiohttp.ClientSession, url: str) -> list[S.Sample]:
    return S.parse_prometheus(await _get_text(session, url))


async def _sampler(session: aiohttp.ClientSession, ep: Endpoints, t0: float, interval: float, stop: asyncio.Event,
                   site_samples: list[dict[str, Any]], gw_samples: list[dict[str, Any]], errors: dict[str, int]) -> None:
    while True:
        t = time.perf_counter() - t0

        async def site(name: str, url: str) -> None:
            try:
                snap = S.site_snapshot(await _scrape(session, url))
                site_samples.append({"t": t, "site": name, **snap})
            except Exception:  # a sampler keeps going; failures are counted and reported
                errors[f"site {name}"] = errors.get(f"site {name}", 0) + 1

        async def gw(url: str) -> None:
            try:
                samples = await _scrape(session, url)
                pressure = {lbl.get("site", "?"): v for n, lbl, v in samples if n == "aigrid_site_pressure"}
                gw_samples.append({"t": t, "gateway": url, "pressure": pressure})
            except Exception:
                errors[f"gateway {url}"] = errors.get(f"gateway {url}", 0) + 1

        await asyncio.gather(*(site(n, u) for n, u in ep.site_metrics.items()), *(gw(u) for u in ep.gateway_metrics))
        try:
            await asyncio.wait_for(stop.wait(), interval)
            return
        except asyncio.TimeoutError:
            pass


async def _counters(session: aiohttp.ClientSession, ep: Endpoints, failures: list[str]) -> tuple[dict[str, float], dict[str, dict[str, float | None]]]:
    """Counter snapshot of every gateway and site. An endpoint that stopped answering (a site that died
    during the run) is named in `failures` and left out, so the run's results are never lost to it."""
    gw: dict[str, float] = {}
    for url in ep.gateway_metrics:
        try:
            series = S.counter_series(await _scrape(session, url), "aigrid_")
        except (LoadTestError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            failures.append(f"gateway metrics at {url}: {exc or type(exc).__name__}")
            continue
        for k, v in series.items():
            gw[k] = gw.get(k, 0.0) + v
    sites: dict[str, dict[str, float | None]] = {}
    for name, url in ep.site_metrics.items():
        try:
            snap = S.site_snapshot(await _scrape(session, url))
        except (LoadTestError, aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            failures.append(f"site {name} metrics at {url}: {exc or type(exc).__name__}")
            snap = {"prompt_tokens_total": None, "generation_tokens_total": None}
        sites[name] = {"prompt_tokens_total": snap["prompt_tokens_total"], "generation_tokens_total": snap["generation_tokens_total"]}
    return gw, sites


def _diff_opt(before: dict[str, float | None], after: dict[str, float | None]) -> dict[str, float | None]:
    return {k: (v - before[k] if v is not None and before.get(k) is not None else None) for k, v in after.items()}  # type: ignore[operator]


# ---- driving -------------------------------------------------------------------------------------------
class _Progress:
    """A rich progress bar, or nothing (tests, the demo's own display)."""

    def __init__(self, enabled: bool, total: float, label: str) -> None:
        self.p = None
        if enabled:

            self.p = Progress(TextColumn("[bold]{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                              TimeElapsedColumn(), transient=False)
            self.task = self.p.add_task(label, total=total, info="")

    def __enter__(self) -> "_Progress":
        if self.p:
            self.p.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.p:
            self.p.stop()

    def update(self, completed: float, info: str) -> None:
        if self.p:
            self.p.update(self.task, completed=completed, info=info)


async def run_loadtest(spec: LoadSpec, endpoints: Endpoints, *, name: str = "run", progress: bool = True,
                       planned_requests: list[PlannedRequest] | None = None) -> LoadResult:
    """Run one bounded load test and return everything measured. Raises LoadTestError on setup problems
    (unreachable admin, listener or metrics endpoint; non-loopback address) before sending anything."""
    ep = endpoints
    _check_url("Envoy listener (--url)", ep.url, ep.allow_remote)
    _check_url("Envoy admin (--admin)", ep.admin, ep.allow_remote)
    for u in ep.gateway_metrics:
        _check_url("gateway metrics (--metrics)", u, ep.allow_remote)
    for n, u in ep.site_metrics.items():
        _check_url(f"site {n} metrics (--site-metrics)", u, ep.allow_remote)

    limit = spec.max_in_flight if spec.open_loop else (spec.concurrency or 1)
    connector = aiohttp.TCPConnector(limit=limit + 16, force_close=False)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=True) as session:
        # Preflight: every endpoint answers before the first request goes out.
        before_envoy = await _envoy_stats(session, ep.admin)
        await _listener_open(ep.url)
        for u in ep.gateway_metrics:
            await _probe(session, "gateway metrics", u)
        for n, u in ep.site_metrics.items():
            await _probe(session, f"site {n} metrics", u)
        snapshot_failures: list[str] = []
        before_gw, before_sites = await _counters(session, ep, snapshot_failures)
        # Scope the simulators' timing verdict to this run (sites that are not simulators ignore it).
        await fetch_sim_timing(session, ep.site_metrics, reset=True)

        records: list[dict[str, Any]] = []
        site_samples: list[dict[str, Any]] = []
        gw_samples: list[dict[str, Any]] = []
        sampler_errors: dict[str, int] = {}
        dropped = 0
        stop = asyncio.Event()
        started_unix = time.time()
        t0 = time.perf_counter()
        sampler = asyncio.create_task(_sampler(session, ep, t0, spec.sample_interval_s, stop, site_samples, gw_samples, sampler_errors))
        # Turn k of a conversation waits for turn k-1: a user reads the answer before replying.
        turn_done: dict[tuple[str, int], asyncio.Event] = {}
        in_flight: set[asyncio.Task[None]] = set()
        total = float(spec.requests) if spec.requests is not None else float(spec.duration_s or 1)
        bar = _Progress(progress, total, name)

        def tick() -> None:
            errs = sum(1 for r in records if not r["ok"])
            done = float(len(records)) if spec.requests is not None else min(time.perf_counter() - t0, total)
            bar.update(done, f"{len(records)} done, {len(in_flight)} in flight, {errs} errors, {dropped} dropped")

        async def do(p: PlannedRequest) -> None:
            if p.conversation and p.turn > 1:
                prev = turn_done.setdefault((p.conversation, p.turn - 1), asyncio.Event())
                try:
                    await asyncio.wait_for(prev.wait(), spec.request_timeout_s)
                except asyncio.TimeoutError:
                    pass
            try:
                records.append(await send_one(session, ep.url, spec.path, p, t0, spec.request_timeout_s))
            finally:
                if p.conversation:
                    turn_done.setdefault((p.conversation, p.turn), asyncio.Event()).set()
                tick()

        def expired() -> bool:
            return spec.duration_s is not None and time.perf_counter() - t0 >= spec.duration_s

        # A caller may bring its own requests (the twin-vs-live check sends the twin's workload).
        planned: Iterator[PlannedRequest] = iter(planned_requests) if planned_requests is not None else plan(spec)
        with bar:
            if spec.open_loop:
                for p in planned:
                    delay = t0 + (p.at_s or 0.0) - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if expired():
                        break
                    if len(in_flight) >= spec.max_in_flight:
                        dropped += 1
                        continue
                    task = asyncio.create_task(do(p))
                    in_flight.add(task)
                    task.add_done_callback(in_flight.discard)
                if in_flight:
                    await asyncio.wait(set(in_flight), timeout=spec.request_timeout_s + 5)
            else:

                async def worker() -> None:
                    for p in planned:  # one shared generator: asyncio is single-threaded, so no races
                        if expired():
                            return
                        task = asyncio.current_task()
                        assert task is not None
                        in_flight.add(task)
                        try:
                            await do(p)
                        finally:
                            in_flight.discard(task)

                await asyncio.gather(*(worker() for _ in range(spec.concurrency or 1)))
            tick()
        window = max((r["sent_s"] + r["e2e_s"] for r in records), default=0.0) - min((r["sent_s"] for r in records), default=0.0)
        stop.set()
        await sampler
        after_envoy = await _envoy_stats(session, ep.admin)
        after_gw, after_sites = await _counters(session, ep, snapshot_failures)
        timings = await fetch_sim_timing(session, ep.site_metrics)

    diff = S.diff_counters(before_envoy, after_envoy)
    clusters = ep.site_clusters or S.discover_site_clusters(after_envoy)
    envoy_sites = S.per_site_envoy(diff, clusters)
    site_counters = {s: _diff_opt(before_sites.get(s, {}), v) for s, v in after_sites.items()}
    records.sort(key=lambda r: r["index"])
    summary = S.summarize(records, window_s=window, envoy_sites=envoy_sites, site_samples=site_samples,
                          site_counter_diff=site_counters, dropped=dropped)
    notes: list[str] = []
    if not any(r["streamed"] for r in records if r["ok"]) and any(r["ok"] for r in records):
        notes.append("no response was streamed (SSE): TTFT and inter-token latency are not measured, only end-to-end time")
    if snapshot_failures:
        notes.append("counter snapshots incomplete: " + "; ".join(snapshot_failures))
    if sampler_errors:
        notes.append("metrics sampling failures: " + ", ".join(f"{k} x{v}" for k, v in sorted(sampler_errors.items())))
    result = LoadResult(
        name=name, spec=spec.model_dump(), endpoints=asdict(ep), started_unix=started_unix, window_s=window,
        records=records, dropped=dropped, site_clusters=dict(clusters), envoy_sites=envoy_sites,
        envoy_extproc=S.extproc_counters(diff), gateway_counters=S.diff_counters(before_gw, after_gw),
        site_counters=site_counters, site_samples=site_samples, gateway_samples=gw_samples,
        sampler_errors=sampler_errors, summary=summary, notes=notes,
    )
    return attach_sim_validity(result, timings)


# ---- the simulators' own timing verdict -----------------------------------------------------------------
def sim_base_url(metrics_url: str) -> str:
    """A site's base URL from its /metrics URL (``http://h:p/metrics`` -> ``http://h:p``)."""
    base = metrics_url.rstrip("/")
    for tail in ("/metrics/dcgm", "/metrics"):
        if base.endswith(tail):
            return base[: -len(tail)]
    return base


async def fetch_sim_timing(session: aiohttp.ClientSession, site_urls: dict[str, str], *, reset: bool = False) -> dict[str, dict[str, Any]]:
    """{site: its ``GET /sim/timing`` answer} (``?reset=1`` starts a new window). A site that is not a
    simulator (404) or does not answer gets ``{"error": ...}``: no verdict, never a crash."""
    out: dict[str, dict[str, Any]] = {}
    for name, url in site_urls.items():
        target = sim_base_url(url) + "/sim/timing" + ("?reset=1" if reset else "")
        try:
            async with session.get(target, timeout=aiohttp.ClientTimeout(total=PROBE_TIMEOUT_S)) as r:
                if r.status != 200:
                    out[name] = {"error": f"GET {target}: HTTP {r.status} (not a simulator?)"}
                    continue
                body = orjson.loads(await r.read())
                out[name] = body if isinstance(body, dict) else {"error": f"GET {target}: not a JSON object"}
        except (aiohttp.ClientError, asyncio.TimeoutError, orjson.JSONDecodeError) as exc:
            out[name] = {"error": f"GET {target}: {type(exc).__name__}: {exc}"}
    return out


def attach_sim_validity(result: LoadResult, timings: dict[str, dict[str, Any]]) -> LoadResult:
    """Mark ``result`` invalid when a simulated site fell behind real time ({site: /sim/timing})."""
    verdict = S.sim_validity(timings)
    result.sim_timing = verdict
    for reason in verdict["reasons"]:
        note = "INVALID: " + reason
        if note not in result.notes:
            result.notes.append(note)
    return result


# ---- answer retention (needs a view of the prompt as it arrived at the site) ---------------------------
def attach_retention(result: LoadResult, arrived: dict[str, str], source: str) -> LoadResult:
    """Compute the answer-retention proxy from prompts as the sites received them ({request id: text}).

    The client cannot see a prompt after the gateway rewrote it, so the caller supplies that view: from a
    recording upstream (`fetch_standin_prompts`), or any record source keyed by the request-id header."""
    r = S.answer_retention(result.records, arrived)
    r["source"] = source
    result.retention = r
    return result


async def fetch_standin_prompts(site_urls: dict[str, str]) -> dict[str, str]:
    """{request id: prompt text as received} from stand-in sites' `/_aigrid/records` (base64 bodies)."""


    out: dict[str, str] = {}
    async with aiohttp.ClientSession() as session:
        for base in site_urls.values():
            async with session.get(base.rstrip("/") + "/_aigrid/records", timeout=aiohttp.ClientTimeout(total=10)) as r:
                recs = orjson.loads(await r.read())
            for rec in recs:
                rid = rec.get("headers", {}).get(REQUEST_ID_HEADER)
                if not rid:
                    continue
                try:
                    body = orjson.loads(base64.b64decode(rec.get("body_b64", "")))
                    out[rid] = "\n".join(str(m.get("content", "")) for m in body.get("messages", []) if isinstance(m, dict))
                except (ValueError, AttributeError):
                    continue
    return out

