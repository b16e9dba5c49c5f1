"""`aigrid demo` end to end (short), and its bad-input paths: clear message, non-zero exit, nothing left."""

from __future__ import annotations

import json
import socket
import subprocess
import sys

import pytest

from extproc.tools.stack.procs import free_port, port_is_free

pytestmark = pytest.mark.slow


def _ours_running(workdir) -> list[str]:  # type: ignore[no-untyped-def]
    """Processes whose command line mentions this run's workdir (every child we start does)."""
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if str(workdir) in line and "ps -eo" not in line]


def test_short_demo_writes_report_and_leaves_nothing_running(tmp_path):
    port, admin = free_port(), free_port()
    out = tmp_path / "report"
    r = subprocess.run(
        [sys.executable, "-m", "extproc.cli", "demo", "--arms", "B1,R+C", "--seeds", "2", "--twin-duration", "6", "--live-seconds", "4",
         "--port", str(port), "--admin-port", str(admin), "--workdir", str(tmp_path / "work"), "--out", str(out)],
        capture_output=True, text=True, timeout=900,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    doc = json.loads((out / "summary.json").read_text())
    assert set(doc["arms"]) == {"B1", "R+C"}
    for arm in doc["arms"].values():
        g = arm["goodput"]
        assert g["ci95"][0] <= g["value"] <= g["ci95"][1] and len(g["per_seed"]) == 2
    # The R+C arm really compressed, and answer retention was computed on what reached the GPUs.
    rc = doc["arms"]["R+C"]["at_goodput"]
    assert rc["rewrites"] > 0 and rc["retention_of_compressed"] is not None
    assert rc["prompt_tokens_to_gpu"] < rc["prompt_tokens_sent"]
    assert doc["arms"]["B1"]["at_goodput"]["rewrites"] == 0
    # Twin against live on the dilated grid: two points, one of them at or above 80% of goodput.
    pts = doc["twin_vs_live"]["points"]
    assert len(pts) == 2 and max(p["fraction_of_goodput"] for p in pts) >= 0.8
    for p in pts:
        assert p["arm"] == "B1" and p["requests"] > 0
        assert isinstance(p["rps_within_10pct"], bool) and isinstance(p["ttft_p95_within_20pct"], bool)
        assert p["live"]["completed"] > 0 and p["twin"]["completed"] > 0
        assert set(p["sim_timing"]) == {"edge", "remote"}
    # The coarse step's costs were measured here and charged (the same figure in the rewriter's rule).
    used = doc["compressor"]["used"]
    assert used["lexical_tokens_per_s"] > 0 and used["coarse_tokens_per_s"] > 0
    assert (out / "goodput.png").exists()
    assert "every process stopped" in r.stdout
    assert port_is_free(port) and port_is_free(admin)
    assert _ours_running(tmp_path) == []


def test_port_taken_is_a_clear_error(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "extproc.cli", "demo", "--port", str(taken), "--admin-port", str(free_port()),
             "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
            capture_output=True, text=True, timeout=120,
        )
    assert r.returncode == 1
    assert f"port {taken} is already taken" in r.stderr
    assert _ours_running(tmp_path) == []


def test_unknown_arm(tmp_path):
    r = subprocess.run([sys.executable, "-m", "extproc.cli", "demo", "--arms", "B1,x"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--arms: unknown arm x" in r.stderr
    r = subprocess.run([sys.executable, "-m", "extproc.cli", "demo", "--arms", "B1", "--live-arm", "R+C"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "--live-arm R+C is not among --arms" in r.stderr
