"""CPU cost per request of `aigrid serve` on its two routing paths, next to a bare grpc.aio pass-through
(bench/bare_extproc.py) measured in the same run, through real Envoy, and their ratios.

- headers only: profile `least_loaded` reads no body, so the gateway answers in the request-headers
  phase (one gRPC message, nothing buffered);
- body: the default profile `aigrid` (the cost model reads the body), or `--body-profile`: headers, then
  the buffered body (before this option the row ran the test harness's pinned `spill` profile, whatever
  this line said);
- baseline: the bare servicer answering the same two messages (headers → ask for the body; body →
  continue), with no parsing, no policy and no header mutation. Both ratios use it, so the headers-only
  ratio can fall below 1 (the gateway skips a message the baseline handles).
- `--envoy-data-plane` adds an opt-in row: the same bare pass-through on betterproto2 + grpclib
  (bench/bare_extproc_edp.py; `pip install envoy-data-plane grpclib`).

Every server sits behind its own Envoy with the same rendered config; a separate client process drives
each in alternating rounds. The figure is the server process's user+system CPU time (from /proc) divided
by the requests it served, so the noisy shared machine's wall-clock speed does not enter the ratio. The
last line is JSON with `ratio_headers_only` and `ratio_body` (goals <= 1.0 and <= 1.15).

`--uds` adds `aigrid serve` (body path) and the bare pass-through behind a Unix-socket ext_proc cluster
(`gateway.listen: unix:/path`): `ratio_body_uds` (each against its own transport's floor) and the
socket's effect on each server (`uds_over_tcp_*`, CPU per request UDS / TCP).

Usage: .venv/bin/python bench/extproc_overhead.py [--requests 3000] [--rounds 3] [--concurrency 32] [--envoy-data-plane] [--uds]
       [--body-profile spill] [--bare-variant '--rw']
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import make_stack, wait_pressure, wait_until  # noqa: E402

from extproc.gateway.config import load_config  # noqa: E402
from extproc.gateway.config.schema import DEFAULT_PROFILE  # noqa: E402
from extproc.gateway.envoyconf.render import render_envoy_yaml  # noqa: E402
from extproc.tools.stack.procs import free_port, port_open, python_argv, start_envoy  # noqa: E402

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
    ap.add_argument("--envoy-data-plane", action="store_true", help="add the betterproto2/grpclib pass-through row")
    ap.add_argument("--uds", action="store_true",
                    help="add rows: aigrid serve (body) and the bare pass-through behind a Unix-socket ext_proc cluster")
    ap.add_argument("--bare-variant", action="append", default=[], metavar="FLAGS",
                    help="add a row: the bare pass-through started with these flags (e.g. '--sync 64', "
                         "'--option grpc.optimization_target=throughput'); its CPU against the default bare")
    ap.add_argument("--mutating-bare", action="store_true",
                    help="add a row: the bare servicer answering with the gateway's header mutations (the answer's shape without its logic)")
    ap.add_argument("--body-profile", default=DEFAULT_PROFILE,
                    help=f"routing.profile of the body row (default: the config's default, {DEFAULT_PROFILE})")
    args = ap.parse_args()
    console = Console()
    root = Path(tempfile.mkdtemp(prefix="aigrid-overhead-"))
    st = make_stack(root)
    try:
        # The load is published once: it must stay fresh for the whole run (stale_after_s), or every
        # decision would be the stale-map fallback instead of the profile's own steps.
        # The test harness pins the older `spill` profile for its end-to-end cases; the body row is the
        # default profile's unless --body-profile says otherwise.
        body_gw = st.add_gateway(extra={"routing": {"profile": args.body_profile}}, stale_after_s=600)
        headers_gw = st.add_gateway(extra={"routing": {"profile": "least_loaded"}}, stale_after_s=600)
        st.publish_load("edge", kv=0.3, ttl_ms=600_000)
        st.publish_load("remote", kv=0.1, ttl_ms=600_000)
        for g in (body_gw, headers_gw):
            wait_pressure(g, "edge", lambda p: p > 0.2)

        def envoy_to(name: str, listen: str) -> str:
            """An Envoy with the body gateway's config, its ext_proc cluster pointing at `listen`."""
            cfg = yaml.safe_load(body_gw.config_path.read_text())
            envoy_port, admin_port = free_port(), free_port()
            cfg["gateway"]["listen"] = listen
            cfg["envoy"].update(listen_port=envoy_port, admin_port=admin_port)
            (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
            (root / f"{name}-envoy.yaml").write_text(render_envoy_yaml(load_config(str(root / f"{name}.yaml"))))
            start_envoy(st.group, root / f"{name}-envoy.yaml", admin_port, name=f"envoy-{name}")
            wait_until(lambda: port_open(envoy_port), 30, f"{name} envoy")
            return f"http://127.0.0.1:{envoy_port}/v1/chat/completions"

        def bare_server(name: str, script: str, *flags: str, uds: bool = False) -> tuple[int, str]:
            """A bare servicer behind its own Envoy (same config, ext_proc cluster pointing at it)."""
            if uds:
                listen = f"unix:{root}/{name}.sock"
                ready = lambda: os.path.exists(listen[5:])  # noqa: E731
            else:
                port = free_port()
                listen = f"127.0.0.1:{port}"
                ready = lambda: port_open(port)  # noqa: E731
            proc = st.group.start(name, python_argv(str(REPO / "bench" / script), "--listen", listen, *flags))
            proc.wait_ready(ready, 30, f"{name} listening")
            return proc.pid, envoy_to(name, listen)

        def serve_uds(name: str) -> tuple[int, str]:
            """`aigrid serve` (the body gateway's config) on a Unix socket, behind its own Envoy."""
            cfg = yaml.safe_load(body_gw.config_path.read_text())
            listen = f"unix:{root}/{name}.sock"
            metrics = free_port()
            cfg["gateway"].update(listen=listen, metrics_listen=f"127.0.0.1:{metrics}")
            (root / f"{name}-serve.yaml").write_text(yaml.safe_dump(cfg))
            proc = st.group.start(name, python_argv("-m", "extproc.cli", "serve", "--config", str(root / f"{name}-serve.yaml")))
            proc.wait_ready(lambda: port_open(metrics) and os.path.exists(listen[5:]), 30, f"{name} ready")
            time.sleep(1.0)  # its map reader's first full read
            return proc.pid, envoy_to(name, listen)

        body = root / "body.json"
        body.write_text(json.dumps({
            "model": "llama-3.1-8b", "stream": False,
            "messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Summarise the benefits of edge inference for carriers. " * 8}],
        }))
        targets = {
            "aigrid serve, headers only": (headers_gw.serve.pid, f"http://127.0.0.1:{headers_gw.envoy_port}/v1/chat/completions"),
            "aigrid serve, body": (body_gw.serve.pid, f"http://127.0.0.1:{body_gw.envoy_port}/v1/chat/completions"),
            "bare pass-through (grpcio, 2 messages)": bare_server("bare", "bare_extproc.py"),
        }
        if args.uds:
            targets["aigrid serve, body, unix socket"] = serve_uds("serve-uds")
            targets["bare pass-through, unix socket"] = bare_server("bare-uds", "bare_extproc.py", uds=True)
        for i, flags in enumerate(args.bare_variant):
            targets[f"bare pass-through {flags}"] = bare_server(f"bare-v{i}", "bare_extproc.py", *flags.split())
        if args.envoy_data_plane:
            targets["bare pass-through (envoy-data-plane, 2 messages)"] = bare_server("bare-edp", "bare_extproc_edp.py")
        if args.mutating_bare:
            targets["bare + the gateway's header mutations"] = bare_server("bare-mut", "bare_extproc.py", "--mutate")
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
        base = med["bare pass-through (grpcio, 2 messages)"]
        bare_key = "bare pass-through (grpcio, 2 messages)"

        def paired(name: str) -> float:
            """Median over rounds of this round's ratio: the targets of one round run back to back, so a
            slow drift of the shared box's load cancels out of each pair."""
            return statistics.median(a / b for a, b in zip(per_req[name], per_req[bare_key]))

        result = {
            "cpu_us_per_request": med,
            "ratio_headers_only": med["aigrid serve, headers only"] / base,
            "ratio_body": med["aigrid serve, body"] / base,
            "paired_ratio_headers_only": paired("aigrid serve, headers only"),
            "paired_ratio_body": paired("aigrid serve, body"),
            "per_round_cpu_us": per_req,
            "load_avg": os.getloadavg()[0],
        }
        if args.uds:
            # Each transport against its own bare floor, and the socket's effect on each server.
            ub = med["bare pass-through, unix socket"]
            result["ratio_body_uds"] = med["aigrid serve, body, unix socket"] / ub
            result["uds_over_tcp_bare"] = ub / base
            result["uds_over_tcp_serve_body"] = med["aigrid serve, body, unix socket"] / med["aigrid serve, body"]
        if args.bare_variant:
            result["bare_variants_over_bare"] = {f: med[f"bare pass-through {f}"] / base for f in args.bare_variant}
        if args.mutating_bare:
            result["ratio_mutating_bare"] = med["bare + the gateway's header mutations"] / base
        if args.envoy_data_plane:
            result["ratio_envoy_data_plane_bare"] = med["bare pass-through (envoy-data-plane, 2 messages)"] / base
        console.print(f"headers only / bare = {result['ratio_headers_only']:.2f} (goal <= 1.0); "
                      f"body / bare = {result['ratio_body']:.2f} (goal <= 1.15)")
        def phase_us(gw) -> dict[str, float]:  # type: ignore[no-untyped-def]
            """The gateway's own time per ext_proc message (its phase histogram: sum / count), by phase."""
            sums: dict[str, float] = {}
            counts: dict[str, float] = {}
            for line in gw.metrics().splitlines():
                for prefix, into in (("aigrid_processor_phase_seconds_sum{", sums), ("aigrid_processor_phase_seconds_count{", counts)):
                    if line.startswith(prefix):
                        into[line.split('phase="', 1)[1].split('"', 1)[0]] = float(line.rsplit(" ", 1)[1])
            return {p: sums[p] / n * 1e6 for p, n in counts.items() if n}

        # Wall time inside the processor per message, over the whole run (warm-up included): the share of
        # the CPU figure that is our Python, the rest being gRPC, asyncio and the process around it.
        result["processor_us_per_message"] = {"body": phase_us(body_gw), "headers_only": phase_us(headers_gw)}
        result["decision_steps"] = {
            g: sorted({line.split('step="', 1)[1].split('"', 1)[0] for line in gw.metrics().splitlines()
                       if line.startswith("aigrid_decisions_total{")})
            for g, gw in (("body", body_gw), ("headers_only", headers_gw))
        }
        print(json.dumps(result))
    finally:
        st.group.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
