"""`aigrid demo`: the seed's AI Grid comparison on one machine, read from Envoy's admin stats.

One local grid (Redis, two simulated GPU sites with their agents, `aigrid serve`, Envoy) runs the same
seeded workload three times, changing only the gateway:
  (a) edge only, no compression          — everything to the edge site (policy.strategy default_only)
  (b) least-loaded routing, no compression — what today's load-aware routers do
  (c) the AI Grid gateway                 — load-aware spill with hysteresis, SLA classes, conversation
                                            affinity, and load-driven prompt compression
Between scenarios `aigrid serve` restarts with the new policy and the sites drain to idle. Every process
is stopped at the end, also on Ctrl-C or failure.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from extproc.stack.local import LocalStack
from extproc.stack.procs import StackError


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    strategy: str
    compress: bool


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("a", "edge only, no compression", "default_only", False),
    Scenario("b", "least-loaded routing, no compression", "least_loaded", False),
    Scenario("c", "AI Grid gateway: load-aware spill + affinity + compression", "aigrid", True),
)

REFERENCE_WORKLOAD = Path(__file__).resolve().parents[1] / "loadtest" / "reference.yaml"


def _site_idle(metrics_url: str) -> bool:
    """True when the site's engine reports nothing running or waiting."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as r:  # noqa: S310 (loopback)
            text = r.read().decode()
    except OSError:
        return False
    busy = 0.0
    for line in text.splitlines():
        if line.startswith(("vllm:num_requests_running", "vllm:num_requests_waiting")):
            busy += float(line.rsplit(" ", 1)[-1])
    return busy == 0.0


def _wait(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.25)
    raise StackError(f"timed out after {timeout:.0f}s waiting for {what}")


def _gateway_sees_all_sites(stack: LocalStack) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.metrics_port}/metrics", timeout=2) as r:  # noqa: S310
            text = r.read().decode()
    except OSError:
        return False
    seen = 0
    for s in stack.sites:
        for line in text.splitlines():
            if line.startswith(f'aigrid_site_pressure{{site="{s.name}"}}') and float(line.rsplit(" ", 1)[-1]) >= 0:
                seen += 1
                break
    return seen == len(stack.sites)


def compression_settings(model_path: str | None) -> dict:
    """Compression for scenario (c). The coarse step (real MiniLM / BM25) always runs; the LLMLingua-2
    fine step runs when a model directory is given."""
    # BM25 ranking: on a CPU-only box that also hosts the simulated sites, MiniLM (~0.65 s of CPU per
    # RAG request here) would compete with the sites for the two cores; BM25 ranked as well on our eval set.
    cfg: dict = {"enabled": True, "deadline_ms": 1500, "ranker": "bm25"}
    if model_path:
        cfg["model_path"] = model_path
    return cfg


async def _run_scenarios(stack: LocalStack, spec, scenarios, model_path: str | None, console: Console) -> dict:  # type: ignore[no-untyped-def]
    from extproc.loadtest.runner import Endpoints, attach_retention, fetch_standin_prompts, run_loadtest  # noqa: PLC0415

    endpoints = Endpoints(
        url=stack.url,
        admin=f"http://127.0.0.1:{stack.admin_port}",
        gateway_metrics=[f"http://127.0.0.1:{stack.metrics_port}/metrics"],
        site_metrics={s.name: f"http://127.0.0.1:{stack.site_ports[s.name]}/metrics" for s in stack.sites},
    )
    results = {}
    for sc in scenarios:
        console.rule(f"[bold]({sc.key}) {sc.title}")
        stack.restart_serve({"strategy": sc.strategy}, compression_settings(model_path) if sc.compress else {})
        await asyncio.to_thread(_wait, lambda: _gateway_sees_all_sites(stack), 60, "the gateway to read every site's load")
        for s in stack.sites:
            url = endpoints.site_metrics[s.name]
            await asyncio.to_thread(_wait, lambda url=url: _site_idle(url), 120, f"site {s.name} to drain")
        site_urls = {s.name: f"http://127.0.0.1:{stack.site_ports[s.name]}" for s in stack.sites}
        await asyncio.to_thread(_clear_records, site_urls)
        result = await run_loadtest(spec, endpoints, name=sc.key)
        # Answer retention: does the prompt as it reached the GPU still contain the gold answer?
        arrived = await fetch_standin_prompts(site_urls)
        results[sc.key] = attach_retention(result, arrived, "simulated sites' request records")
    return results


def _clear_records(site_urls: dict[str, str]) -> None:
    for url in site_urls.values():
        req = urllib.request.Request(url + "/_aigrid/records", method="DELETE")
        with urllib.request.urlopen(req, timeout=5):  # noqa: S310 (loopback)
            pass


def run_demo(
    workdir: Path,
    out_dir: Path,
    *,
    duration_s: float,
    concurrency: int,
    envoy_port: int = 10000,
    admin_port: int = 9901,
    model_path: str | None = None,
    scenarios: tuple[Scenario, ...] = SCENARIOS,
) -> dict:
    from extproc.loadtest.report import render_compare, render_summary, write_report  # noqa: PLC0415
    from extproc.loadtest.workloads import load_workload_file  # noqa: PLC0415

    console = Console()
    spec = load_workload_file(REFERENCE_WORKLOAD, duration_s=duration_s, concurrency=concurrency)
    stack = LocalStack(workdir, envoy_port=envoy_port, admin_port=admin_port, upstream="sim")
    t0 = time.monotonic()
    with console.status("starting the local grid (Redis, simulated sites, agents, ext_proc, Envoy)..."):
        stack.start()
    try:
        console.print(f"grid up in {time.monotonic() - t0:.0f}s: sites " + ", ".join(
            f"{s.name} ({s.replicas}x {s.gpu}, +{s.link_delay_ms:g} ms link)" for s in stack.sites))
        results = asyncio.run(_run_scenarios(stack, spec, scenarios, model_path, console))
    finally:
        stack.stop()
    paths = write_report(results, out_dir, baseline="a")
    console.print(render_summary(results))
    if len(results) > 1:
        console.print(render_compare(results, "a"))
    console.print(f"report: {paths.json}")
    for name, p in paths.charts.items():
        console.print(f"  chart {name}: {p}")
    console.print(f"demo finished in {time.monotonic() - t0:.0f}s; every process stopped")
    return results
