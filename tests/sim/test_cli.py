"""`aigrid sim` as a process: ready line, several sites in one process, clean exit on SIGTERM/SIGINT."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from extproc.tools.stack.procs import free_port

ROOT = Path(__file__).resolve().parents[2]


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "sim", *args],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def _wait_ready(proc: subprocess.Popen[str], n: int) -> list[str]:
    lines: list[str] = []
    deadline = time.monotonic() + 30
    while len(lines) < n and time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            break
        if "listening on" in line:
            lines.append(line.strip())
    if len(lines) < n:
        proc.kill()
        raise AssertionError(f"not ready: {lines} / {proc.stderr.read()}")  # type: ignore[union-attr]
    return lines


def _get(url: str) -> tuple[int, bytes]:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.status, r.read()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_single_site_ready_line_and_clean_signal_exit(sig: int) -> None:
    port = free_port()
    proc = _start(["--name", "edge", "--gpu", "L4", "--model", "llama-3.1-8b", "--gpus-per-replica", "1",
                   "--replicas", "1", "--host", "127.0.0.1", "--port", str(port),
                   "--link-delay-ms", "5", "--link-jitter-ms", "1", "--speed-factor", "1.0"])
    try:
        (line,) = _wait_ready(proc, 1)
        assert line.startswith(f"aigrid sim: site edge listening on http://127.0.0.1:{port}")
        assert _get(f"http://127.0.0.1:{port}/health")[0] == 200
        info = json.loads(_get(f"http://127.0.0.1:{port}/sim/info")[1])
        assert info["site"]["link_delay_ms"] == 5 and info["replica"]["gpu"] == "L4"
        proc.send_signal(sig)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sites_file_hosts_several_sites(tmp_path: Path) -> None:
    p1, p2 = free_port(), free_port()
    sites = tmp_path / "sites.yaml"
    sites.write_text(
        f"""
sites:
  - {{name: edge, gpu: L4, model: llama-3.1-8b, port: {p1}, link_delay_ms: 2}}
  - {{name: core, gpu: H100, model: llama-3.1-70b, gpus-per-replica: 4, replicas: 2, port: {p2}}}
"""
    )
    proc = _start(["--sites-file", str(sites), "--speed-factor", "2"])
    try:
        lines = _wait_ready(proc, 2)
        assert any("site edge" in l for l in lines) and any("site core" in l for l in lines)
        core = json.loads(_get(f"http://127.0.0.1:{p2}/sim/info")[1])
        assert core["replica"]["gpus_per_replica"] == 4 and core["site"]["replicas"] == 2
        assert core["site"]["speed_factor"] == 2  # command-line flags act as defaults
        dcgm = _get(f"http://127.0.0.1:{p2}/metrics/dcgm")[1].decode()
        assert dcgm.count("DCGM_FI_DEV_GPU_UTIL{") == 8  # 2 replicas x 4 GPUs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()


def test_impossible_site_fails_with_message() -> None:
    proc = _start(["--gpu", "L4", "--model", "llama-3.1-70b", "--port", str(free_port())])
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert "does not fit" in err
