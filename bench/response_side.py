"""The response side's cost, measured against baselines in the same run, through real Envoy.

1. CPU per request with usage accounting on vs off. Simulated sites (`aigrid sim`, every answer exactly
   `--tokens` tokens), a fixed mix of non-stream and streamed requests, closed loop. Five gateways (each
   `aigrid serve` + its own Envoy) driven in alternating rounds:
     off                - routing only (observability.usage false);
     access_log         - usage via Envoy: Lua reads the response tail, the gRPC access log streams
                          entries to the gateway, batched (the default usage_via);
     access_log+inject  - the same, and streams that did not ask for usage are asked; Lua strips the chunk;
     ext_proc           - usage via a second ext_proc filter in observability mode (every chunk is a gRPC
                          message to the gateway; Envoy never waits on it);
     ext_proc+inject    - the same, and the routing filter strips in a blocking STREAMED round trip per chunk.
   Clients of the +inject gateways stream without include_usage; the others ask for it themselves.
   Figures: `aigrid serve` user+system CPU (from /proc) per request, and serve+Envoy together.
2. Latency the gateway adds: an instant upstream (the stand-in), a fixed open-loop rate; the same Envoy
   config with the ext_proc filter (routing only), with routing + the observing filter, and with no ext_proc
   filter at all. Latency is counted from each request's scheduled send time (no coordinated omission).

Ends with one JSON line. Usage: .venv/bin/python bench/response_side.py [--rounds 2] [--requests 240]
  [--rate 50] [--seconds 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import Gateway, Stack, make_stack, wait_until  # noqa: E402

from extproc.gateway.config import load_config  # noqa: E402
from extproc.gateway.envoyconf.render import render_envoy_config  # noqa: E402
from extproc.tools.stack.procs import ProcessGroup, free_port, http_ok, port_open, python_argv, start_envoy  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def envoy_ready(gw: Gateway) -> None:
    def ok() -> bool:
        try:
            return port_open(gw.envoy_port) and http_ok(f"http://127.0.0.1:{gw.admin_port}/ready")
        except OSError:
            return False

    wait_until(ok, 30, f"{gw.name} envoy ready")


def sim_stack(root: Path, tokens: int) -> Stack:
    group = ProcessGroup(root / "logs")
    st = Stack(root=root, group=group, redis_port=free_port(), sites={"edge": free_port(), "remote": free_port()})
    st.start_redis()
    for name, port in st.sites.items():
        p = group.start(
            f"sim-{name}",
            python_argv("-m", "extproc.cli", "--log-level", "WARNING", "sim", "--name", name, "--gpu", "H100",
                        "--model", "llama-3.1-8b", "--host", "127.0.0.1", "--port", str(port), "--ignore-eos",
                        "--speed-factor", "4"),
        )
        p.wait_ready(lambda port=port: http_ok(f"http://127.0.0.1:{port}/health"), 30, f"sim {name}")
        st.site_procs[name] = p
    return st


def bodies(n: int, tokens: int, usage_by_client: bool) -> list[bytes]:
    """Half non-stream, half streamed; streams ask for usage themselves or not."""
    out = []
    for i in range(n):
        b: dict = {"model": MODEL, "max_tokens": tokens,
                   "messages": [{"role": "user", "content": f"Summarise edge inference for carriers, case {i}. " * 6}]}
        if i % 2:
            b["stream"] = True
            if usage_by_client:
                b["stream_options"] = {"include_usage": True}
        out.append(json.dumps(b).encode())
    return out


async def closed_loop(url: str, reqs: list[bytes], concurrency: int) -> int:
    ok = 0
    it = iter(reqs)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def worker() -> None:
            nonlocal ok
            for body in it:
                async with s.post(url, data=body, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    ok += r.status == 200

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return ok


async def open_loop(url: str, body: bytes, rate: float, seconds: float) -> tuple[list[float], int]:
    """Requests sent at fixed times; latency from the scheduled time to the last byte (ms)."""
    n = int(rate * seconds)
    lat: list[float] = []
    bad = 0
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
        t0 = time.perf_counter() + 0.2

        async def one(i: int) -> None:
            nonlocal bad
            at = t0 + i / rate
            await asyncio.sleep(max(0.0, at - time.perf_counter()))
            async with s.post(url, data=body, headers={"content-type": "application/json"}) as r:
                await r.read()
                if r.status != 200:
                    bad += 1
            lat.append((time.perf_counter() - at) * 1000)

        await asyncio.gather(*(one(i) for i in range(n)))
    return lat, bad


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def bare_envoy(st: Stack, gw: Gateway, root: Path) -> tuple[str, int]:
    """The gateway's own rendered Envoy config with every ext_proc filter removed,
    on new ports: the baseline Envoy for the latency comparison."""
    cfg = render_envoy_config(load_config(str(gw.config_path)))
    port, admin = free_port(), free_port()
    lis = cfg["static_resources"]["listeners"][0]
    lis["address"]["socket_address"]["port_value"] = port
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin
    hcm = lis["filter_chains"][0]["filters"][0]["typed_config"]
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.router"]
    name = f"bare{admin}"
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    start_envoy(st.group, path, admin, name=f"envoy-{name}")
    wait_until(lambda: port_open(port) and http_ok(f"http://127.0.0.1:{admin}/ready"), 30, "bare envoy")
    return f"http://127.0.0.1:{port}/v1/chat/completions", admin


def cpu_part(args: argparse.Namespace, root: Path, log) -> dict:  # type: ignore[no-untyped-def]
    st = sim_stack(root / "cpu", args.tokens)
    try:
        configs = {
            "off": {},
            "access_log": {"observability": {"usage": True}},
            "access_log+inject": {"observability": {"usage": True, "inject_stream_usage": True}},
            "ext_proc": {"observability": {"usage": True, "usage_via": "ext_proc"}},
            "ext_proc+inject": {"observability": {"usage": True, "usage_via": "ext_proc", "inject_stream_usage": True}},
        }
        gws = {k: st.add_gateway(extra=v, strategy="least_loaded", stale_after_s=600) for k, v in configs.items()}
        for gw in gws.values():
            envoy_ready(gw)
        st.publish_idle(*gws.values())
        for site in st.sites:
            st.publish_load(site, kv=0.05, ttl_ms=3_600_000)
        work = {k: bodies(args.requests, args.tokens, usage_by_client=not k.endswith("+inject")) for k in configs}
        for k, gw in gws.items():  # warm-up
            asyncio.run(closed_loop(gw.url("/v1/chat/completions"), work[k][:40], args.concurrency))
        # Ratios are also taken per round against that round's "off" (the configurations of one round run
        # back to back), so slow drifts in the shared machine's load cancel out.
        serve_us: dict[str, list[float]] = {k: [] for k in configs}
        total_us: dict[str, list[float]] = {k: [] for k in configs}
        for rnd in range(args.rounds):
            for k, gw in gws.items():
                sp, ep = gw.serve.pid, gw.envoy.pid  # type: ignore[union-attr]
                s0, e0 = cpu_seconds(sp), cpu_seconds(ep)
                t0 = time.perf_counter()
                ok = asyncio.run(closed_loop(gw.url("/v1/chat/completions"), work[k], args.concurrency))
                wall = time.perf_counter() - t0
                s1, e1 = cpu_seconds(sp), cpu_seconds(ep)
                if ok != args.requests:
                    log(f"  {k}: only {ok}/{args.requests} ok")
                serve_us[k].append((s1 - s0) / max(1, ok) * 1e6)
                total_us[k].append((s1 - s0 + e1 - e0) / max(1, ok) * 1e6)
                log(f"  cpu round {rnd + 1} {k:17s}: serve {serve_us[k][-1]:6.0f} µs/req, serve+envoy {total_us[k][-1]:6.0f} µs/req, {ok / wall:5.1f} req/s")
        med_s = {k: statistics.median(v) for k, v in serve_us.items()}
        med_t = {k: statistics.median(v) for k, v in total_us.items()}
        return {
            "requests_per_round": args.requests,
            "rounds": args.rounds,
            "tokens_per_answer": args.tokens,
            "serve_cpu_us_per_request": med_s,
            "serve_plus_envoy_cpu_us_per_request": med_t,
            "ratio_serve_vs_off": {k: med_s[k] / med_s["off"] for k in configs if k != "off"},
            "ratio_serve_plus_envoy_vs_off": {k: med_t[k] / med_t["off"] for k in configs if k != "off"},
            "paired_ratio_serve_vs_off": {
                k: statistics.median(a / b for a, b in zip(serve_us[k], serve_us["off"])) for k in configs if k != "off"
            },
            "paired_ratio_serve_plus_envoy_vs_off": {
                k: statistics.median(a / b for a, b in zip(total_us[k], total_us["off"])) for k in configs if k != "off"
            },
        }
    finally:
        st.group.stop_all()


def latency_part(args: argparse.Namespace, root: Path, log) -> dict:  # type: ignore[no-untyped-def]
    st = make_stack(root / "lat")
    try:
        # stale_after_s: the load is published once and must stay fresh for the whole run, or every decision
        # would be the stale-map fallback instead of the default profile's steps.
        routing = st.add_gateway(stale_after_s=600)
        observing = st.add_gateway(extra={"observability": {"usage": True}}, stale_after_s=600)  # access_log (default)
        for gw in (routing, observing):
            envoy_ready(gw)
        st.publish_idle(routing, observing)
        for site in st.sites:
            st.publish_load(site, kv=0.05, ttl_ms=3_600_000)
        bare_url, _ = bare_envoy(st, routing, root)
        targets = {
            "no ext_proc": bare_url,
            "routing": routing.url("/v1/chat/completions"),
            "routing+usage": observing.url("/v1/chat/completions"),
        }
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "Summarise edge inference. " * 8}]}).encode()
        for url in targets.values():
            asyncio.run(open_loop(url, body, args.rate, 1.0))
        lat: dict[str, list[float]] = {k: [] for k in targets}
        for rnd in range(args.rounds):
            for k, url in targets.items():
                xs, bad = asyncio.run(open_loop(url, body, args.rate, args.seconds))
                lat[k].extend(xs)
                log(f"  latency round {rnd + 1} {k:16s}: p50 {pct(xs, 0.5):6.2f} ms  p99 {pct(xs, 0.99):6.2f} ms  ({len(xs)} req, {bad} not 200)")
        # Where the routing path's time goes: the processor's own time per ext_proc message, by phase.
        text = routing.metrics()
        phase_us = {}
        for ph in ("request_headers", "request_body"):
            tot = cnt = 0.0
            for line in text.splitlines():
                if line.startswith("aigrid_processor_phase_seconds_sum") and f'phase="{ph}"' in line:
                    tot = float(line.split()[-1])
                elif line.startswith("aigrid_processor_phase_seconds_count") and f'phase="{ph}"' in line:
                    cnt = float(line.split()[-1])
            phase_us[ph] = tot / cnt * 1e6 if cnt else None
        log(f"  processor time per message (routing gateway, mean): {phase_us}")
        p50 = {k: pct(v, 0.5) for k, v in lat.items()}
        p99 = {k: pct(v, 0.99) for k, v in lat.items()}
        base = "no ext_proc"
        return {
            "rate_rps": args.rate,
            "requests_per_target": len(lat[base]),
            "p50_ms": p50,
            "p99_ms": p99,
            "added_p50_ms_routing": p50["routing"] - p50[base],
            "added_p99_ms_routing": p99["routing"] - p99[base],
            "processor_us_per_message_routing": phase_us,
            "added_p50_ms_routing_usage": p50["routing+usage"] - p50[base],
            "added_p99_ms_routing_usage": p99["routing+usage"] - p99[base],
        }
    finally:
        st.group.stop_all()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--requests", type=int, default=240, help="requests per CPU round (half streamed)")
    ap.add_argument("--tokens", type=int, default=32, help="output tokens per answer")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--rate", type=float, default=50.0, help="open-loop requests/s for the latency part")
    ap.add_argument("--seconds", type=float, default=8.0, help="seconds per latency round")
    ap.add_argument("--skip-cpu", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="aigrid-respside-"))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    result: dict = {"load_avg_start": os.getloadavg()[0], "cpus": os.cpu_count()}
    if not args.skip_cpu:
        log(f"CPU per request: {args.rounds} rounds × {args.requests} requests, {args.tokens} tokens each, c={args.concurrency}")
        result["cpu"] = cpu_part(args, root, log)
    if not args.skip_latency:
        log(f"latency: open loop {args.rate:g} req/s × {args.seconds:g} s × {args.rounds} rounds per target")
        result["latency"] = latency_part(args, root, log)
    result["load_avg_end"] = os.getloadavg()[0]
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
