"""The gateway's wheel carries the gateway, the agent, the wire and the CLI: no tool code and no eval data.
The tools' own wheel (tools/pyproject.toml) carries them, data included."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _wheel(project: Path, out: Path) -> list[str]:
    # --no-build-isolation: setuptools is in the venv, and nothing is fetched.
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out),
                    str(project)], check=True, capture_output=True, text=True, timeout=300)
    (whl,) = out.glob("*.whl")
    return zipfile.ZipFile(whl).namelist()


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[str], list[str]]:
    base = tmp_path_factory.mktemp("wheels")
    return _wheel(ROOT, base / "gateway"), _wheel(ROOT / "tools", base / "tools")


def test_gateway_wheel_holds_no_tool_code_and_no_eval_data(wheels):
    gateway, _ = wheels
    code = [n for n in gateway if n.startswith("extproc/")]
    assert "extproc/gateway/server/main.py" in code and "extproc/agent/cli.py" in code
    assert "extproc/wire/loadreport/load_report_pb2.py" in code and "extproc/cli.py" in code
    assert not [n for n in code if n.startswith("extproc/tools/")]
    assert not [n for n in gateway if n.endswith(".jsonl")], "eval data in the gateway's wheel"


def test_tools_wheel_holds_the_tools_and_their_data(wheels):
    _, tools = wheels
    code = [n for n in tools if n.startswith("extproc/")]
    assert code and all(n.startswith("extproc/tools/") for n in code)
    for f in ("extproc/tools/sim/profiles.yaml", "extproc/tools/twin/reference.yaml",
              "extproc/tools/evalcompress/data/rag_eval_hard.jsonl", "extproc/tools/twin/grid.py"):
        assert f in code, f
