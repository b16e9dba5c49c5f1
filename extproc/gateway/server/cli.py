"""`aigrid serve`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from extproc.gateway.config import ConfigError, load_config
from extproc.gateway.config.load import add_config_arg


def _serve(args: argparse.Namespace) -> int:
    from extproc.gateway.observe import redact  # noqa: PLC0415
    from extproc.gateway.server.main import serve  # noqa: PLC0415 (keep `aigrid --help` fast)

    # No request text in the logs unless AIGRID_LOG_REQUEST_TEXT=1 (exception messages may quote it).
    redact.install()

    from extproc.gateway.routing.registry import ProfileError, check_profiles  # noqa: PLC0415

    try:
        config = load_config(args.config)
        # Profiles are built from registered step types, which the config schema does not know: every
        # configured profile is built once here, so a bad step is refused before anything listens.
        check_profiles(config)
    except ConfigError as exc:
        print(f"aigrid serve: {exc}", file=sys.stderr)
        return 2
    except ProfileError as exc:
        print(f"aigrid serve: {args.config or 'aigrid.yaml'}: invalid configuration\n  {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(config))
    except OSError as exc:
        print(f"aigrid serve: {exc}", file=sys.stderr)
        return 1
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the ext_proc gRPC server")
    add_config_arg(p)
    p.set_defaults(func=_serve)
