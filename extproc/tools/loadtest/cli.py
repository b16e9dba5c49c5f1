"""`aigrid loadtest`: drive OpenAI traffic through Envoy, print the summary, write JSON + PNG charts.

Exit status: 0 done; 1 setup problem (unreachable endpoint, wrong admin address) or no request succeeded;
2 bad workload or flags. Messages name what and where.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

DEFAULT_CONCURRENCY = 4
DEFAULT_REQUESTS = 50


def _site_metric(text: str) -> tuple[str, str]:
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"expected name=URL, got {text!r}")
    return name, url


def build_spec(args: argparse.Namespace) -> Any:
    from extproc.tools.loadtest.workloads import load_workload_file, parse_spec  # noqa: PLC0415

    overrides: dict[str, Any] = {
        "seed": args.seed, "rate": args.rate, "concurrency": args.concurrency,
        "requests": args.requests, "duration_s": args.duration, "model": args.model,
    }
    if args.no_stream:
        overrides["stream"] = False
    if args.rag is not None or args.chat is not None:
        overrides["mix"] = {"rag": args.rag if args.rag is not None else 0.0, "chat": args.chat if args.chat is not None else 0.0}
    if args.workload:
        return load_workload_file(args.workload, **overrides)
    data = {k: v for k, v in overrides.items() if v is not None}
    if "rate" not in data and "concurrency" not in data:
        data["concurrency"] = DEFAULT_CONCURRENCY
    if "requests" not in data and "duration_s" not in data:
        data["requests"] = DEFAULT_REQUESTS
    return parse_spec(data, "command line")


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415

    from extproc.tools.loadtest.report import render_summary, write_report  # noqa: PLC0415
    from extproc.tools.loadtest.runner import Endpoints, LoadTestError, run_loadtest  # noqa: PLC0415
    from extproc.tools.loadtest.workloads import WorkloadError  # noqa: PLC0415

    err = Console(stderr=True)
    try:
        spec = build_spec(args)
    except WorkloadError as exc:
        print(f"aigrid loadtest: {exc}", file=sys.stderr)
        return 2
    ep = Endpoints(url=args.url, admin=args.admin, allow_remote=args.allow_remote, gateway_metrics=list(args.metrics or []),
                   site_metrics=dict(args.site_metrics or []))
    try:
        result = asyncio.run(run_loadtest(spec, ep, name=args.name, progress=not args.no_progress))
    except LoadTestError as exc:
        print(f"aigrid loadtest: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aigrid loadtest: interrupted", file=sys.stderr)
        return 130
    out = Console()
    render_summary({args.name: result}, out)
    paths = write_report({args.name: result}, args.out, baseline=None)
    out.print(f"report: {paths.json}")
    for key, p in paths.charts.items():
        out.print(f"chart {key}: {p}")
    for key, why in paths.skipped.items():
        out.print(f"[dim]chart {key} skipped: {why}[/dim]")
    if result.summary["ok"] == 0:
        err.print(f"aigrid loadtest: no request succeeded (errors: {result.summary['errors']}); see {paths.json}")
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("loadtest", help="drive OpenAI requests through Envoy and report throughput, latency, GPU memory")
    p.add_argument("--url", default="http://127.0.0.1:10000", help="Envoy listener (default http://127.0.0.1:10000)")
    p.add_argument("--admin", default="http://127.0.0.1:9901", help="Envoy admin (default http://127.0.0.1:9901)")
    p.add_argument("--metrics", action="append", metavar="URL", help="gateway (aigrid serve) /metrics URL; repeatable")
    p.add_argument("--site-metrics", action="append", type=_site_metric, metavar="NAME=URL",
                   help="a site's /metrics (vLLM + DCGM names), e.g. edge=http://127.0.0.1:8001/metrics; repeatable")
    p.add_argument("--workload", metavar="FILE", help="YAML workload file (flags below override its keys)")
    p.add_argument("--rag", type=float, metavar="SHARE", help="share of RAG requests (with --chat)")
    p.add_argument("--chat", type=float, metavar="SHARE", help="share of multi-turn chat requests (with --rag)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--rate", type=float, help="open loop: Poisson arrivals per second")
    mode.add_argument("--concurrency", type=int, help=f"closed loop: requests in flight (default {DEFAULT_CONCURRENCY})")
    p.add_argument("--duration", type=float, metavar="S", help="stop sending after S seconds")
    p.add_argument("--requests", type=int, metavar="N", help=f"stop after N requests (default {DEFAULT_REQUESTS} without --duration)")
    p.add_argument("--seed", type=int, help="workload seed (default 1)")
    p.add_argument("--model", help="model name in the requests (default llama-3.1-8b)")
    p.add_argument("--no-stream", action="store_true", help="ask for non-streaming answers (only end-to-end time is measured)")
    p.add_argument("--name", default="run", help="name of this run in the report (default run)")
    p.add_argument("--out", default="loadtest-report", help="report directory (default ./loadtest-report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--allow-remote", action="store_true",
                   help="allow non-loopback addresses (your own deployment; default: local stacks only)")
    p.set_defaults(func=_run)
