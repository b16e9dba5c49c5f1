"""`aigrid` command line: one sub-command per concern, each registered by its own package.

Every package that owns a sub-command exposes ``register(subparsers)``; this module only wires them up, so
adding a command never touches another concern's code. A package whose optional dependencies are missing
(the compressor's model stack, say) still lets every other command run.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from extproc import __version__

# Packages that contribute sub-commands, in the order they appear in `aigrid --help`.
COMMAND_MODULES: tuple[str, ...] = (
    "extproc.gateway.server.cli",  # serve
    "extproc.gateway.operator.cli",  # status, site drain/undrain
    "extproc.gateway.envoyconf.cli",  # envoy-config
    "extproc.tools.stack.cli",  # up, demo
    "extproc.agent.cli",  # agent
    "extproc.tools.sim.cli",  # sim
    "extproc.tools.evalcompress.cli",  # eval-compression
    "extproc.tools.loadtest.cli",  # loadtest
    "extproc.gateway.request.cli",  # trust hash-key
    "extproc.tools.twin.cli",  # twin
)


# Which module owns which command: running one command imports only its module. `aigrid serve` must not
# carry the simulator's tokenizer tables or the load test's imports: a larger heap costs every request
# in garbage-collection time.
COMMAND_OWNERS: dict[str, str] = {
    "serve": "extproc.gateway.server.cli",
    "status": "extproc.gateway.operator.cli",
    "site": "extproc.gateway.operator.cli",
    "envoy-config": "extproc.gateway.envoyconf.cli",
    "up": "extproc.tools.stack.cli",
    "demo": "extproc.tools.stack.cli",
    "agent": "extproc.agent.cli",
    "sim": "extproc.tools.sim.cli",
    "eval-compression": "extproc.tools.evalcompress.cli",
    "loadtest": "extproc.tools.loadtest.cli",
    "trust": "extproc.gateway.request.cli",
    "twin": "extproc.tools.twin.cli",
}


def _command_in(argv: list[str]) -> str | None:
    """The sub-command named in argv (first word not an option or the --log-level value)."""
    skip = False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--log-level":
            skip = True
            continue
        if not a.startswith("-"):
            return a
    return None


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aigrid", description="AI Grid gateway")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    parser.add_argument("--version", action="version", version=f"aigrid {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    owner = COMMAND_OWNERS.get(_command_in(argv) or "") if argv is not None else None
    for name in (owner,) if owner else COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            # Only a missing *package* of ours is tolerated (a concern not built yet); a missing
            # third-party import inside an existing module is a real error and must surface.
            if exc.name and (name == exc.name or name.startswith(exc.name + ".")):
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    rc = args.func(args)
    return int(rc or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
