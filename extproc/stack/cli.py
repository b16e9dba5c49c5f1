"""`aigrid up`: a local grid for a newcomer; Ctrl-C stops every process it started."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from extproc.stack.local import LocalStack, simulator_available
from extproc.stack.procs import StackError


def _up(args: argparse.Namespace) -> int:
    upstream = args.upstream or ("sim" if simulator_available() else "standin")
    stack = LocalStack(Path(args.workdir), envoy_port=args.port, admin_port=args.admin_port, upstream=upstream)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        with stack:
            print(
                f"AI Grid is up ({upstream} sites: {', '.join(s.name for s in stack.sites)}).\n"
                f"  send requests to  {stack.url}/v1/chat/completions\n"
                f"  Envoy admin       http://127.0.0.1:{stack.admin_port}/stats\n"
                f"  gateway metrics   http://127.0.0.1:{stack.metrics_port}/metrics\n"
                f"  load map          aigrid status -c {stack.config_path}\n"
                f"  logs              {stack.group.log_dir}\n"
                "Ctrl-C stops everything.",
                flush=True,
            )
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
    from extproc.stack.demo import SCENARIOS, run_demo  # noqa: PLC0415

    wanted = [s for s in SCENARIOS if s.key in set(args.scenarios.split(","))]
    if not wanted:
        print(f"aigrid demo: --scenarios must name some of {', '.join(s.key for s in SCENARIOS)}", file=sys.stderr)
        return 2
    try:
        run_demo(
            Path(args.workdir), Path(args.out), duration_s=args.duration, concurrency=args.concurrency,
            envoy_port=args.port, admin_port=args.admin_port, model_path=args.compression_model,
            scenarios=tuple(wanted),
        )
    except StackError as exc:
        print(f"aigrid demo: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("aigrid demo: interrupted; every process stopped", file=sys.stderr)
        return 130
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser("demo", help="run the AI Grid comparison on a local grid and write the report")
    d.add_argument("--duration", type=float, default=45, help="seconds of load per scenario (default 45)")
    d.add_argument("--concurrency", type=int, default=48, help="users in flight (default 48)")
    d.add_argument("--scenarios", default="a,b,c", help="which of a,b,c to run (default all)")
    d.add_argument("--compression-model", default=None,
                   help="local LLMLingua-2 model directory for the fine step (default: coarse step only)")
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
    p.set_defaults(func=_up)
