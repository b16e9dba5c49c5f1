"""Does compression slow down routing? Latency of routing-only requests through Envoy + `aigrid serve`
while the same gateway also receives long RAG prompts at a fixed rate — once with compression off, once
with it on (LLMLingua-2-shaped model in the worker thread) — in the same run, same machine.

The difference between the two is what compression costs the routing path; comparing with an idle
gateway instead would also count the long requests' own parsing and proxying, which happen either way.
Printed: p50/p99 of the short requests' latency in each phase, and the on/off ratios.

Usage: .venv/bin/python bench/routing_under_compression.py [--short 300] [--long-rate 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import make_stack, wait_pressure  # noqa: E402

from extproc.gateway.compression.offline import force_offline, install_tiktoken_cache  # noqa: E402
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec  # noqa: E402

SHORT = json.dumps({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello, route me."}]}).encode()
HEADERS = {"content-type": "application/json"}


def long_body(i: int) -> bytes:
    item = synth_rag_item(random.Random(i), SyntheticRagSpec(prompt_tokens={"median": 1500, "sigma": 0.2, "min": 1000, "max": 2500}, japanese_share=0.0))
    return json.dumps({"model": "m", "max_tokens": 8, "messages": rag_messages(item)}).encode()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def short_latencies(s: aiohttp.ClientSession, url: str, n: int, rate: float) -> list[float]:
    """n short requests, open loop at `rate` per second (spread over the phase, not a quick burst)."""
    out: list[float] = []

    async def one() -> None:
        t = time.perf_counter()
        async with s.post(url, data=SHORT, headers=HEADERS) as r:
            await r.read()
            assert r.status == 200, r.status
        out.append(time.perf_counter() - t)

    tasks = []
    for _ in range(n):
        tasks.append(asyncio.create_task(one()))
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*tasks)
    return out


async def phase(url: str, n_short: int, short_rate: float, long_rate: float) -> tuple[list[float], int]:
    """Short-request latencies while long requests arrive open-loop at long_rate per second."""
    stop = asyncio.Event()
    sent = 0
    async with aiohttp.ClientSession() as s:
        async def one_long(i: int) -> None:
            async with s.post(url, data=long_body(i), headers=HEADERS) as r:
                await r.read()

        async def arrivals() -> None:
            nonlocal sent
            tasks = []
            while not stop.is_set():
                tasks.append(asyncio.create_task(one_long(sent)))
                sent += 1
                await asyncio.sleep(1.0 / long_rate)
            await asyncio.gather(*tasks)

        await short_latencies(s, url, 30, 30.0)  # warm up
        bg = asyncio.create_task(arrivals())
        await asyncio.sleep(2)
        lat = await short_latencies(s, url, n_short, short_rate)
        stop.set()
        await bg
    return lat, sent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--short-rate", type=float, default=20.0, help="short requests per second (open loop)")
    ap.add_argument("--long-rate", type=float, default=2.0, help="long RAG requests per second (open loop)")
    args = ap.parse_args()
    force_offline()
    install_tiktoken_cache()
    from extproc.tools.evalcompress.tinymodel import build_full_shape_model

    root = Path(tempfile.mkdtemp(prefix="aigrid-rucomp-"))
    model = build_full_shape_model(root / "full-bert-base-multilingual-cased")
    st = make_stack(root)
    try:
        plain = st.add_gateway()
        comp = st.add_gateway(extra={"compression": {
            "enabled": True, "model_path": str(model), "ranker": "bm25", "fixed_rate": 0.5, "break_even": False,
            "min_prompt_tokens": 200, "deadline_ms": 20_000}})
        st.publish_load("edge", kv=0.1, ttl_ms=600_000)
        st.publish_load("remote", kv=0.1, ttl_ms=600_000)
        for gw in (plain, comp):
            wait_pressure(gw, "edge", lambda p: p >= 0.0, timeout=60)
        url = "/v1/chat/completions"
        off, n_off = asyncio.run(phase(plain.url(url), args.short, args.short_rate, args.long_rate))
        on, n_on = asyncio.run(phase(comp.url(url), args.short, args.short_rate, args.long_rate))
        compressed = comp.metric("aigrid_rewrites_total") or 0
        plain_rewrites = plain.metric("aigrid_rewrites_total") or 0
    finally:
        st.group.stop_all()
    print(f"short (routing-only) requests: {len(off)} per phase; long RAG requests at {args.long_rate}/s: "
          f"{n_off} with compression off ({int(plain_rewrites)} rewritten), {n_on} with it on ({int(compressed)} compressed)")
    for name, q in (("p50", 50), ("p99", 99)):
        a, b = pct(off, q) * 1000, pct(on, q) * 1000
        print(f"  {name}: compression off {a:.2f} ms, on {b:.2f} ms, ratio {b / a:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
