"""`aigrid serve`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from extproc.config import ConfigError, load_config


def _serve(args: argparse.Namespace) -> int:
    from extproc.server.main import serve  # noqa: PLC0415 (keep `aigrid --help` fast)

    from extproc.routing.registry import ProfileError, check_profiles  # noqa: PLC0415

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


def add_config_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="aigrid.yaml (default: $AIGRID_CONFIG, else ./aigrid.yaml)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run the ext_proc gRPC server")
    add_config_arg(p)
    p.set_defaults(func=_serve)
