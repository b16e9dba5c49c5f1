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
            try:
                while not stop.wait(0.5):
                    dead = [p.name for p in stack.group.procs if not p.alive()]
                    if dead:
                        print(f"aigrid up: {', '.join(dead)} exited; stopping (logs in {stack.group.log_dir})", file=sys.stderr)
                        return 1
            except KeyboardInterrupt:
                pass
    except StackError as exc:
        print(f"aigrid up: {exc}", file=sys.stderr)
        return 1
    print("aigrid up: stopped")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("up", help="start a local grid: Redis, GPU sites, agents, ext_proc, Envoy")
    p.add_argument("--port", type=int, default=10000, help="Envoy listener port (default 10000)")
    p.add_argument("--admin-port", type=int, default=9901, help="Envoy admin port (default 9901)")
    p.add_argument("--upstream", choices=("sim", "standin"), help="simulated GPU sites (default when available) or instant stand-ins")
    p.add_argument("--workdir", default=".aigrid/up", help="config and logs go here (default .aigrid/up)")
    p.set_defaults(func=_up)
