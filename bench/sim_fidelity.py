#!/usr/bin/env python3
"""How faithfully does `aigrid sim` keep GPU time on this machine?

Starts one simulated site in a child process (`aigrid sim`, real HTTP on loopback), drives it with N
concurrent streaming clients in a closed loop from this process, and prints the simulator's own timing
error at each load level: how late each engine step released its tokens versus the modelled time
(``/sim/timing``; the same figure is exported as ``aigrid_sim_step_lateness_seconds``), plus the clock
slip (time given up after falling more than the slip threshold behind).

    .venv/bin/python bench/sim_fidelity.py                      # 64, 256, 512 streams, H100 + Llama-3.1-8B
    .venv/bin/python bench/sim_fidelity.py --gpu L4 --levels 64 256 --seconds 10

Each level runs a short warm-up, then ``--seconds`` of measurement; the whole run is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from extproc.tools.stack.procs import free_port

ROOT = Path(__file__).resolve().parents[1]


def start_server(args: argparse.Namespace, port: int) -> subprocess.Popen[str]:
    cmd = [
        sys.executable, "-m", "extproc.cli", "--log-level", "WARNING", "sim",
        "--name", "fidelity", "--gpu", args.gpu, "--model", args.model,
        "--gpus-per-replica", str(args.tp), "--replicas", "1", "--host", "127.0.0.1", "--port", str(port),
        "--max-num-seqs", str(max(args.levels)), "--speed-factor", str(args.speed_factor), "--ignore-eos",
        "--stream-interval", str(args.stream_interval),
        # Every client sends the same prompt: with the prefix cache on, prefill would be almost free and
        # the load not comparable with earlier runs. Off unless asked for.
        "--prefix-caching" if args.prefix_caching else "--no-prefix-caching",
    ]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        if "listening on" in line:
            return proc
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise SystemExit(f"simulator did not start: {proc.stderr.read()}")  # type: ignore[union-attr]


async def worker(session: aiohttp.ClientSession, url: str, body: bytes, stop_at: list[float], counts: list[int]) -> None:
    """Closed loop: one streaming request after another until told to stop. Counts SSE data events."""
    while time.monotonic() < stop_at[0]:
        async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
            resp.raise_for_status()
            async for chunk in resp.content.iter_any():
                counts[0] += chunk.count(b"data: {")
        counts[1] += 1


async def run_level(base: str, n: int, warmup: float, seconds: float, prompt: str, max_tokens: int) -> dict:
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "stream": True}).encode()
    url = base + "/v1/completions"
    conn = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
    counts = [0, 0]
    stop_at = [time.monotonic() + warmup + seconds]
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        tasks = [asyncio.create_task(worker(session, url, body, stop_at, counts)) for _ in range(n)]
        await asyncio.sleep(warmup)
        async with session.get(base + "/sim/timing?reset=1") as r:
            before = await r.json()
        c0, t0 = counts[0], time.monotonic()
        await asyncio.sleep(seconds)
        async with session.get(base + "/sim/timing") as r:
            timing = await r.json()
        c1, t1 = counts[0], time.monotonic()
        # Let streams in flight finish (bounded), then cancel the rest.
        stop_at[0] = 0.0
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    timing["client_tokens_per_s"] = (c1 - c0) / (t1 - t0)
    timing["model_tokens_per_s"] = (timing["generation_tokens"] - before["generation_tokens"]) / (t1 - t0)
    timing["window_s"] = t1 - t0
    return timing


async def amain(args: argparse.Namespace) -> None:
    if args.url:  # an already running simulator (e.g. under a profiler)
        proc = None
        base = args.url.rstrip("/")
    else:
        port = free_port()
        proc = start_server(args, port)
        base = f"http://127.0.0.1:{port}"
    prompt = "The optical network links the edge sites to the core. " * max(1, args.prompt_tokens // 11)
    try:
        async with aiohttp.ClientSession() as s:
            async with s.get(base + "/sim/info") as r:
                info = await r.json()
        rep = info["replica"]
        print(
            f"sim_fidelity: {rep['gpu']} x{rep['gpus_per_replica']} {rep['model']}, speed factor "
            f"{rep['speed_factor']}, batch-1 decode step {rep['decode_step_ms_batch1']} ms, "
            f"prompt ~{args.prompt_tokens} tokens, {args.max_tokens} output tokens, stream interval "
            f"{info['site']['stream_interval']}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
        )
        print(f"{'streams':>7} {'steps':>6} {'late mean':>10} {'p50':>8} {'p99':>8} {'max':>8} {'slip s':>7} "
              f"{'tok/s model':>11} {'tok/s client':>12} {'running':>7}")
        for n in args.levels:
            t = await run_level(base, n, args.warmup, args.seconds, prompt, args.max_tokens)
            ms = lambda v: f"{1000 * v:7.2f}"  # noqa: E731
            print(
                f"{n:7d} {t['steps']:6d} {ms(t['lateness_mean_s']):>10} {ms(t['lateness_p50_s']):>8} "
                f"{ms(t['lateness_p99_s']):>8} {ms(t['lateness_max_s']):>8} {t['slip_seconds']:7.2f} "
                f"{t['model_tokens_per_s']:11.0f} {t['client_tokens_per_s']:12.0f} {t['running']:7d}",
                flush=True,
            )
        print("lateness: step release time minus modelled step end (ms; negative = early, timers are ms-granular)")
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gpu", default="H100")
    ap.add_argument("--model", default="llama-3.1-8b")
    ap.add_argument("--tp", type=int, default=1)
    ap.add_argument("--speed-factor", type=float, default=1.0)
    ap.add_argument("--levels", type=int, nargs="+", default=[64, 256, 512])
    ap.add_argument("--seconds", type=float, default=10.0, help="measured seconds per level")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--max-tokens", type=int, default=256)
    ap.add_argument("--stream-interval", type=int, default=1, help="tokens per SSE write (vLLM --stream-interval)")
    ap.add_argument("--prefix-caching", action="store_true", help="leave the simulator's prefix cache on (identical prompts all hit)")
    ap.add_argument("--url", default=None, help="measure an already running simulator instead of starting one")
    args = ap.parse_args()
    asyncio.run(amain(args))


if __name__ == "__main__":
    main()
