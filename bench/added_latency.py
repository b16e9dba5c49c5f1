"""Latency the gateway adds, three ways in one run, through real Envoy to an instant upstream (the stand-in):

  none  - Envoy without any ext_proc filter (the gateway's own rendered config, ext_proc filters removed);
  bare  - the same Envoy config with its ext_proc cluster pointed at bench/bare_extproc.py: a Python
          grpc.aio processor (same grpcio, same server options, same BUFFERED body mode) that answers each
          phase with an empty response: the floor for any Python ext_proc;
  ours  - the same Envoy config with `aigrid serve` on the default profile.

`bare_over_none` is that floor; `ours_over_bare` is what our code adds above it. With `--uds` the bare
processor and `aigrid serve` also run behind a Unix-socket ext_proc cluster (`gateway.listen: unix:...`),
two more targets (`bare_uds`, `ours_uds`).

Open loop: requests go at fixed times (`--rate`), latency is counted from each one's scheduled send time
to its last byte (no coordinated omission). Targets take turns round by round, so slow drifts of the
shared machine's load spread over all of them. Pinning (`--pin`, on when the box has 2+ cores): every
server process and each of its threads (Envoys, processors, stand-in sites, Redis) on CPU 0, this
process (the load generator) on CPU 1, through sched_setaffinity; on a 2-core box that is the only
split, and other tenants of the box still share both cores.

Ends with one JSON line. Usage: .venv/bin/python bench/added_latency.py [--rate 50] [--seconds 8]
  [--rounds 3] [--uds] [--no-pin]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import Stack, make_stack, wait_until  # noqa: E402
from response_side import open_loop, pct  # noqa: E402  (the same open-loop client and percentile)

from extproc.gateway.config import load_config  # noqa: E402
from extproc.gateway.config.schema import DEFAULT_PROFILE  # noqa: E402
from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml  # noqa: E402
from extproc.tools.stack.procs import free_port, http_ok, port_open, python_argv, start_envoy  # noqa: E402

CHAT = "/v1/chat/completions"


def envoy_for(st: Stack, root: Path, base_cfg: dict, name: str, listen: str, strip_extproc: bool = False) -> str:
    """An Envoy with the gateway's rendered config on new ports, its ext_proc cluster pointed at `listen`
    (or with every ext_proc filter removed); returns its chat URL."""
    cfg = dict(base_cfg)
    envoy_port, admin_port = free_port(), free_port()
    cfg["gateway"] = {**cfg["gateway"], "listen": listen}
    cfg["envoy"] = {**cfg["envoy"], "listen_port": envoy_port, "admin_port": admin_port}
    (root / f"{name}.yaml").write_text(yaml.safe_dump(cfg))
    path = root / f"{name}-envoy.yaml"
    if strip_extproc:
        rendered = render_envoy_config(load_config(str(root / f"{name}.yaml")))
        hcm = rendered["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
        path.write_text(yaml.safe_dump(rendered, sort_keys=False))
    else:
        path.write_text(render_envoy_yaml(load_config(str(root / f"{name}.yaml"))))
    start_envoy(st.group, path, admin_port, name=f"envoy-{name}")
    wait_until(lambda: port_open(envoy_port) and http_ok(f"http://127.0.0.1:{admin_port}/ready"), 30, f"{name} envoy")
    return f"http://127.0.0.1:{envoy_port}{CHAT}"


def start_bare(st: Stack, name: str, listen: str) -> None:
    p = st.group.start(name, python_argv(str(REPO / "bench" / "bare_extproc.py"), "--listen", listen))
    if listen.startswith("unix:"):
        p.wait_ready(lambda: os.path.exists(listen[5:]), 30, f"{name} socket")
    else:
        p.wait_ready(lambda: port_open(int(listen.rsplit(":", 1)[1])), 30, f"{name} listening")


def start_serve(st: Stack, root: Path, base_cfg: dict, name: str, listen: str) -> None:
    """`aigrid serve` on `listen` (host:port or unix:path), ready once it sees the grid's (idle) load."""
    cfg = dict(base_cfg)
    metrics = free_port()
    cfg["gateway"] = {**cfg["gateway"], "listen": listen, "metrics_listen": f"127.0.0.1:{metrics}"}
    (root / f"{name}-serve.yaml").write_text(yaml.safe_dump(cfg))
    p = st.group.start(name, python_argv("-m", "extproc.cli", "serve", "--config", str(root / f"{name}-serve.yaml")))

    def ready() -> bool:
        if not port_open(metrics):
            return False
        if listen.startswith("unix:") and not os.path.exists(listen[5:]):
            return False
        if not listen.startswith("unix:") and not port_open(int(listen.rsplit(":", 1)[1])):
            return False
        text = http_get(f"http://127.0.0.1:{metrics}/metrics")
        return 'aigrid_site_pressure{site="edge"} 0.05' in text

    p.wait_ready(ready, 30, f"{name} ready, idle grid seen")


def http_get(url: str) -> str:
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (loopback)
        return r.read().decode()


def pin_all(pids: list[int], cpu: int) -> int:
    """Every thread of each process onto `cpu` (sched_setaffinity on a pid moves one thread only)."""
    n = 0
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(tid, {cpu})
                n += 1
            except OSError:
                pass
    return n


def descendants(root: int) -> list[int]:
    table: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                table[int(d)] = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    out, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in table.items():
            if ppid == parent:
                out.append(pid)
                frontier.append(pid)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=50.0, help="open-loop requests/s")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per target per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--uds", action="store_true", help="add the Unix-socket targets (bare_uds, ours_uds)")
    ap.add_argument("--no-pin", action="store_true", help="leave every process on every core")
    ap.add_argument("--profile", default=DEFAULT_PROFILE, help=f"routing.profile of ours (default {DEFAULT_PROFILE})")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aigrid-latency-"))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result: dict = {"load_avg_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    st = make_stack(root)
    try:
        # One config for every target (the test harness's: stand-in sites, Redis, default profile); each
        # target gets its own Envoy rendered from it, with only the ext_proc address changed.
        base_cfg = st.config_dict((free_port(), free_port(), free_port(), free_port()))
        # The sites' load is published once: it must stay fresh for the whole run, or every decision
        # would be the stale-map fallback instead of the default profile's steps.
        base_cfg["policy"]["stale_after_s"] = 600
        # The harness pins the older `spill` profile for its end-to-end cases; ours runs the default one.
        base_cfg["routing"] = {"profile": args.profile}
        st.publish_load("edge", kv=0.05, ttl_ms=3_600_000)
        st.publish_load("remote", kv=0.05, ttl_ms=3_600_000)
        targets: dict[str, str] = {"none": envoy_for(st, root, base_cfg, "none", base_cfg["gateway"]["listen"], strip_extproc=True)}
        bare_listen = f"127.0.0.1:{free_port()}"
        start_bare(st, "bare", bare_listen)
        targets["bare"] = envoy_for(st, root, base_cfg, "bare", bare_listen)
        ours_listen = f"127.0.0.1:{free_port()}"
        start_serve(st, root, base_cfg, "ours", ours_listen)
        targets["ours"] = envoy_for(st, root, base_cfg, "ours", ours_listen)
        if args.uds:
            start_bare(st, "bare-uds", f"unix:{root}/bare.sock")
            targets["bare_uds"] = envoy_for(st, root, base_cfg, "bare-uds", f"unix:{root}/bare.sock")
            start_serve(st, root, base_cfg, "ours-uds", f"unix:{root}/ours.sock")
            targets["ours_uds"] = envoy_for(st, root, base_cfg, "ours-uds", f"unix:{root}/ours.sock")
        pinned = "off"
        if not args.no_pin and (os.cpu_count() or 1) >= 2:
            servers = descendants(os.getpid())
            n = pin_all(servers, 0)
            os.sched_setaffinity(0, {1})
            pinned = f"{len(servers)} server processes ({n} threads) on CPU 0, the load generator on CPU 1"
        log(f"pinning: {pinned}")
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Summarise edge inference. " * 8}]}).encode()
        for url in targets.values():  # warm-up: connections, imports, caches
            asyncio.run(open_loop(url, body, args.rate, 1.0))
        lat: dict[str, list[float]] = {k: [] for k in targets}
        per_round: dict[str, list[tuple[float, float]]] = {k: [] for k in targets}
        bad_total = 0
        for rnd in range(args.rounds):
            for k, url in targets.items():
                xs, bad = asyncio.run(open_loop(url, body, args.rate, args.seconds))
                bad_total += bad
                lat[k].extend(xs)
                per_round[k].append((pct(xs, 0.5), pct(xs, 0.99)))
                log(f"  round {rnd + 1} {k:9s}: p50 {pct(xs, 0.5):6.2f} ms  p99 {pct(xs, 0.99):6.2f} ms  ({len(xs)} req, {bad} not 200)")
        p50 = {k: pct(v, 0.5) for k, v in lat.items()}
        p99 = {k: pct(v, 0.99) for k, v in lat.items()}

        def paired(a: str, b: str, i: int) -> float:
            return statistics.median(x[i] - y[i] for x, y in zip(per_round[a], per_round[b]))

        result.update({
            "profile": args.profile, "rate_rps": args.rate, "seconds_per_round": args.seconds, "rounds": args.rounds,
            "requests_per_target": len(lat["none"]), "not_200": bad_total, "pinning": pinned,
            "p50_ms": p50, "p99_ms": p99,
            "added_p50_ms_bare_over_none": p50["bare"] - p50["none"],
            "added_p99_ms_bare_over_none": p99["bare"] - p99["none"],
            "added_p50_ms_ours_over_bare": p50["ours"] - p50["bare"],
            "added_p99_ms_ours_over_bare": p99["ours"] - p99["bare"],
            "paired_round_median_p50_ms_ours_over_bare": paired("ours", "bare", 0),
            "paired_round_median_p99_ms_ours_over_bare": paired("ours", "bare", 1),
        })
        if args.uds:
            result.update({
                "added_p50_ms_bare_uds_over_none": p50["bare_uds"] - p50["none"],
                "added_p99_ms_bare_uds_over_none": p99["bare_uds"] - p99["none"],
                "added_p50_ms_ours_uds_over_bare_uds": p50["ours_uds"] - p50["bare_uds"],
                "added_p99_ms_ours_uds_over_bare_uds": p99["ours_uds"] - p99["bare_uds"],
                "p50_ms_uds_minus_tcp": {"bare": p50["bare_uds"] - p50["bare"], "ours": p50["ours_uds"] - p50["ours"]},
                "p99_ms_uds_minus_tcp": {"bare": p99["bare_uds"] - p99["bare"], "ours": p99["ours_uds"] - p99["ours"]},
            })
    finally:
        st.group.stop_all()
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
