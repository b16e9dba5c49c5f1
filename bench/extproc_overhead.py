"""CPU cost per request of `aigrid serve` on the routing-only path, next to a bare grpc.aio pass-through
(bench/bare_extproc.py) measured in the same run, through real Envoy, and their ratio.

Both servers sit behind their own Envoy with the same rendered config; a separate client process drives
each in alternating rounds. The figure is the server process's user+system CPU time (from /proc) divided
by the requests it served, so the noisy shared machine's wall-clock speed does not enter the ratio.

Usage: .venv/bin/python bench/extproc_overhead.py [--requests 3000] [--rounds 3] [--concurrency 32]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import make_stack, wait_pressure  # noqa: E402

from extproc.config import load_config  # noqa: E402
from extproc.envoyconf.render import render_envoy_yaml  # noqa: E402
from extproc.stack.procs import free_port, port_open, python_argv, start_envoy  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process (and its reaped threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def drive(url: str, n: int, c: int, body_file: Path) -> dict:
    out = subprocess.run(
        python_argv(str(REPO / "bench" / "load_client.py"), "--url", url, "-n", str(n), "-c", str(c), "--body-file", str(body_file)),
        check=True, capture_output=True, text=True,
    )
    return json.loads(out.stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=32)
    args = ap.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="aigrid-overhead-"))
    st = make_stack(root)
    try:
        ours = st.add_gateway()
        st.publish_load("edge", kv=0.3, ttl_ms=600_000)
        st.publish_load("remote", kv=0.1, ttl_ms=600_000)
        wait_pressure(ours, "edge", lambda p: p > 0.2)

        # The baseline: same Envoy config, ext_proc cluster pointing at the bare servicer.
        bare_port = free_port()
        bare = st.group.start("bare-extproc", python_argv(str(REPO / "bench" / "bare_extproc.py"), "--listen", f"127.0.0.1:{bare_port}"))
        bare.wait_ready(lambda: port_open(bare_port), 30, "bare ext_proc listening")
        cfg = yaml.safe_load(ours.config_path.read_text())
        envoy_port, admin_port = free_port(), free_port()
        cfg["gateway"]["listen"] = f"127.0.0.1:{bare_port}"
        cfg["envoy"].update(listen_port=envoy_port, admin_port=admin_port)
        bare_cfg = root / "bare.yaml"
        bare_cfg.write_text(yaml.safe_dump(cfg))
        bare_envoy = root / "bare-envoy.yaml"
        bare_envoy.write_text(render_envoy_yaml(load_config(str(bare_cfg))))
        start_envoy(st.group, bare_envoy, admin_port, name="envoy-bare")

        body = root / "body.json"
        body.write_text(json.dumps({
            "model": "llama-3.1-8b", "stream": False,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Summarise the benefits of edge inference for carriers. " * 8}],
        }))
        targets = {
            "aigrid serve": (ours.serve.pid, f"http://127.0.0.1:{ours.envoy_port}/v1/chat/completions"),
            "bare pass-through": (bare.pid, f"http://127.0.0.1:{envoy_port}/v1/chat/completions"),
        }
        # Warm both (imports, connections, JIT-free but cache-warm).
        for _, (pid, url) in targets.items():
            drive(url, 300, args.concurrency, body)
        per_req: dict[str, list[float]] = {k: [] for k in targets}
        rps: dict[str, list[float]] = {k: [] for k in targets}
        for rnd in range(args.rounds):
            for name, (pid, url) in targets.items():
                c0 = cpu_seconds(pid)
                res = drive(url, args.requests, args.concurrency, body)
                c1 = cpu_seconds(pid)
                ok = res["statuses"].get("200", 0)
                if ok != args.requests:
                    console.print(f"[red]{name}: statuses {res['statuses']}[/red]")
                per_req[name].append((c1 - c0) / max(1, ok) * 1e6)
                rps[name].append(ok / res["seconds"])
                console.print(f"round {rnd + 1} {name}: {per_req[name][-1]:.0f} CPU-µs/request, {rps[name][-1]:.0f} req/s")
        t = Table(title=f"ext_proc CPU per request (median of {args.rounds} rounds × {args.requests} requests, c={args.concurrency})")
        t.add_column("server")
        t.add_column("CPU µs / request", justify="right")
        t.add_column("req/s through Envoy", justify="right")
        med = {k: statistics.median(v) for k, v in per_req.items()}
        for k in targets:
            t.add_row(k, f"{med[k]:.0f}", f"{statistics.median(rps[k]):.0f}")
        console.print(t)
        ratio = med["aigrid serve"] / med["bare pass-through"]
        console.print(f"ratio aigrid serve / bare = {ratio:.2f} (goal <= 1.2)")
        print(json.dumps({"cpu_us_per_request": med, "ratio": ratio}))
    finally:
        st.group.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
