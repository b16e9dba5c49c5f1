"""`aigrid envoy-config`: print (or write) Envoy's config for the sites in aigrid.yaml."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from extproc.gateway.config import ConfigError, load_config
from extproc.gateway.config.load import add_config_arg
from extproc.gateway.envoyconf.render import render_envoy_yaml


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        print(f"aigrid envoy-config: {exc}", file=sys.stderr)
        return 2
    text = render_envoy_yaml(cfg)
    if args.output and args.output != "-":
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"aigrid envoy-config: wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("envoy-config", help="render envoy.yaml for the sites in aigrid.yaml")
    add_config_arg(p)
    p.add_argument("--output", "-o", help="write here instead of stdout")
    p.set_defaults(func=_run)
