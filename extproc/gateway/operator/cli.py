"""`aigrid status [--watch]`, `aigrid site drain|undrain <site>`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time

from rich.console import Console

from extproc.gateway.config import ConfigError, load_config
from extproc.gateway.config.load import add_config_arg
from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.gateway.operator.table import status_table
from extproc.wire.redisconn.client import redacted_url


def _config(args: argparse.Namespace, cmd: str) -> GatewayConfig | None:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(f"aigrid {cmd}: {exc}", file=sys.stderr)
        return None


async def read_snapshot(config: GatewayConfig) -> LoadSnapshot:
    return await LoadMapReader(config.redis).read_once()


def _status(args: argparse.Namespace) -> int:
    config = _config(args, "status")
    if config is None:
        return 2
    # Piped output (logs, CI) gets a width the table fits in, instead of the 80-column default.
    console = Console() if sys.stdout.isatty() else Console(width=160)
    if args.watch:
        try:
            from extproc.gateway.operator.watch import watch_status  # noqa: PLC0415
        except ImportError:
            watch_status = None
        if watch_status is not None:
            try:
                asyncio.run(watch_status(config, args.interval))
            except KeyboardInterrupt:
                pass
            return 0
    try:
        snap = asyncio.run(read_snapshot(config))
    except Exception as exc:  # Redis errors come in many classes; the operator needs the message
        print(f"aigrid status: cannot read the load map from {redacted_url(config.redis.url)}: {exc}", file=sys.stderr)
        return 1
    console.print(status_table(config, snap, time.monotonic()))
    return 0


def _drain(args: argparse.Namespace, drained: bool) -> int:
    from extproc.gateway.operator.drain import set_drained  # noqa: PLC0415

    verb = "drain" if drained else "undrain"
    config = _config(args, f"site {verb}")
    if config is None:
        return 2
    try:
        changed = set_drained(config, args.site, drained)
    except KeyError:
        names = ", ".join(s.name for s in config.sites)
        print(f"aigrid site {verb}: unknown site {args.site!r} (configured: {names})", file=sys.stderr)
        return 2
    except Exception as exc:
        print(f"aigrid site {verb}: Redis at {redacted_url(config.redis.url)} refused or failed: {exc}", file=sys.stderr)
        return 1
    state = "drained" if drained else "undrained"
    print(f"site {args.site} {state}" + ("" if changed else " (no change)"))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show the live GPU load map as a table")
    add_config_arg(p)
    p.add_argument("--watch", action="store_true", help="refresh continuously")
    p.add_argument("--interval", type=float, default=1.0, help="refresh interval for --watch (s)")
    p.set_defaults(func=_status)

    site = sub.add_parser("site", help="operator controls for a site")
    ssub = site.add_subparsers(dest="site_command", metavar="ACTION")
    ssub.required = True
    for verb, drained in (("drain", True), ("undrain", False)):
        sp = ssub.add_parser(verb, help=f"{verb} a site on every gateway sharing this Redis")
        sp.add_argument("site")
        add_config_arg(sp)
        sp.set_defaults(func=lambda a, d=drained: _drain(a, d))
