"""`aigrid up`: a local grid for a newcomer; Ctrl-C stops every process it started."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from extproc.tools.stack.local import LocalStack, simulator_available
from extproc.tools.stack.procs import StackError


# What an operator would watch, on by default in the local grid: token usage, time to first chunk and
# durations per site from the responses (streams that did not ask for usage are asked on their behalf,
# and the extra chunk is stripped), and which site answered and why on every response.
UP_OBSERVABILITY = {"usage": True, "inject_stream_usage": True, "client_headers": ["site", "decision"]}


def _banner(stack: LocalStack, upstream: str, overlay: str | None) -> str:
    """Where to send requests, and where what an operator watches can be read."""
    lines = [
        f"AI Grid is up ({upstream} sites: {', '.join(s.name for s in stack.sites)}).",
        f"  send requests to  {stack.url}/v1/chat/completions",
        f"  gateway metrics   http://127.0.0.1:{stack.metrics_port}/metrics"
        "  (gen_ai_client_token_usage, gen_ai_client_operation_*, aigrid_decisions_total)",
        f"  Envoy metrics     http://127.0.0.1:{stack.admin_port}/stats/prometheus"
        "  (envoy_cluster_upstream_rq_total, ext_proc failure_mode_allowed)",
        f"  Envoy admin       http://127.0.0.1:{stack.admin_port}/stats",
    ]
    if upstream == "sim":
        lines.append("  site metrics      " + ", ".join(f"{n} http://127.0.0.1:{p}/metrics" for n, p in stack.site_ports.items()))
    lines += [
        "  response headers  x-aigrid-site, x-aigrid-decision (observability.client_headers)",
        f"  config            {stack.config_path} "
        + (f"(generated, with {overlay} merged over it)" if overlay else "(generated; aigrid up -c FILE merges yours over it)"),
        f"  load map          aigrid status -c {stack.config_path}",
        f"  logs              {stack.group.log_dir}",
        "Ctrl-C stops everything.",
    ]
    return "\n".join(lines)


def _up(args: argparse.Namespace) -> int:
    upstream = args.upstream or ("sim" if simulator_available() else "standin")
    stack = LocalStack(Path(args.workdir), envoy_port=args.port, admin_port=args.admin_port, upstream=upstream,
                       overrides={"observability": dict(UP_OBSERVABILITY)},
                       overlay=Path(args.config) if args.config else None)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with stack:
            print(_banner(stack, upstream, args.config), flush=True)
            # A child that exits is restarted with backoff; the rest keeps serving (with ext_proc down,
            # Envoy fails open to the default route). This thread started every child: it must stay
            # alive as long as they do (their PR_SET_PDEATHSIG is tied to it).
            try:
                while not stop.wait(0.25):
                    for event in stack.supervise():
                        print(f"aigrid up: {event}", file=sys.stderr, flush=True)
            except KeyboardInterrupt:
                pass
    except StackError as exc:
        print(f"aigrid up: {exc}", file=sys.stderr)
        return 1
    print("aigrid up: stopped")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from extproc.tools.stack.demo import ALL_ARMS, run_demo  # noqa: PLC0415

    arms = tuple(a.strip() for a in args.arms.split(",") if a.strip()) if args.arms else None
    if arms is not None:
        bad = [a for a in arms if a not in ALL_ARMS]
        if bad:
            print(f"aigrid demo: --arms: unknown arm {', '.join(bad)}; known: {', '.join(ALL_ARMS)}", file=sys.stderr)
            return 2
    if args.live_arm not in ALL_ARMS:
        print(f"aigrid demo: --live-arm: unknown arm {args.live_arm}; known: {', '.join(ALL_ARMS)}", file=sys.stderr)
        return 2
    if arms is not None and args.live_arm not in arms and not args.no_live:
        print(f"aigrid demo: --live-arm {args.live_arm} is not among --arms (its twin goodput sets the live rates)",
              file=sys.stderr)
        return 2
    if not 1 <= args.dilation <= 1000:
        print("aigrid demo: --dilation must be in [1, 1000]", file=sys.stderr)
        return 2
    try:
        run_demo(
            Path(args.workdir), Path(args.out), envoy_port=args.port, admin_port=args.admin_port, long=args.long,
            arms=arms, seeds=args.seeds, live_seconds=args.live_seconds, live=not args.no_live,
            twin_duration_s=args.twin_duration, dilation=args.dilation, live_arm=args.live_arm,
            live_drain_s=args.live_drain, measure=not args.no_measure,
        )
    except StackError as exc:
        print(f"aigrid demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aigrid demo: interrupted; every process stopped", file=sys.stderr)
        return 130
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="goodput at SLO per arm in the grid twin, plus a live check through Envoy")
    d.add_argument("--long", action="store_true", help="every arm, 40 s runs (default: the main arms, 20 s runs)")
    d.add_argument("--arms", default=None, help="comma-separated arms instead (B0,B1,B2,R,C,R+C,...)")
    d.add_argument("--seeds", type=int, default=5, help="seeds per arm (default 5)")
    d.add_argument("--live-seconds", type=float, default=15.0, help="seconds of live arrivals per point (default 15)")
    d.add_argument("--live-drain", type=float, default=30.0,
                   help="seconds a live point's requests may run after its last arrival, on both sides (default 30)")
    d.add_argument("--live-arm", default="B1", help="arm of the live points (default B1)")
    d.add_argument("--dilation", type=float, default=5.0,
                   help="time dilation of the live simulated sites: every GPU step K x slower (default 5)")
    d.add_argument("--no-measure", action="store_true",
                   help="skip measuring the coarse compression step here (the twin charges the scenario's figure)")
    d.add_argument("--no-live", action="store_true", help="skip the live confirmation")
    d.add_argument("--twin-duration", type=float, default=None, help="simulated seconds per twin run (default: the scenario's 20, 40 with --long)")
    d.add_argument("--port", type=int, default=10000, help="Envoy listener port (default 10000)")
    d.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port (default 9901)")
    d.add_argument("--workdir", default=".aigrid/demo", help="config and logs (default .aigrid/demo)")
    d.add_argument("--out", default="aigrid-report", help="report directory (default ./aigrid-report)")
    d.set_defaults(func=_demo)

    p = sub.add_parser("up", help="start a local grid: Redis, GPU sites, agents, ext_proc, Envoy")
    p.add_argument("--port", type=int, default=10000, help="Envoy listener port (default 10000)")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port (default 9901)")
    p.add_argument("--upstream", choices=("sim", "standin"), help="simulated GPU sites (default when available) or instant stand-ins")
    p.add_argument("--workdir", default=".aigrid/up", help="config and logs go here (default .aigrid/up)")
    p.add_argument("-c", "--config", metavar="FILE",
                   help="your aigrid.yaml overlay, merged over the generated one (policy, routing, compression, "
                        "observability, trust, ...) and checked like any config")
    p.set_defaults(func=_up)
