"""Does compression slow down routing? Latency of routing-only requests through Envoy + `aigrid serve`,
alone and while the same gateway compresses long RAG prompts, in the same run.

The compressor's model (bert-base-multilingual-cased shape, random weights: the real compute) runs in its
own worker thread; the gRPC loop must keep answering short requests (which skip compression) on time.
Printed: p50/p99 of the short requests' end-to-end latency, idle vs busy, and their ratios.

Usage: .venv/bin/python bench/routing_under_compression.py [--short 300] [--long-concurrency 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

from harness import make_stack, wait_pressure  # noqa: E402

from extproc.compression.offline import force_offline, install_tiktoken_cache  # noqa: E402
from extproc.loadtest.workloads import RagSpec, rag_messages, synth_rag_item  # noqa: E402

SHORT = json.dumps({"model": "m", "max_tokens": 8, "messages": [{"role": "user", "content": "Hello, route me."}]}).encode()


def long_body(i: int) -> bytes:
    item = synth_rag_item(random.Random(i), RagSpec(prompt_tokens={"median": 1500, "sigma": 0.2, "min": 1000, "max": 2500}, japanese_share=0.0))
    return json.dumps({"model": "m", "max_tokens": 8, "messages": rag_messages(item)}).encode()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(q / 100 * (len(s) - 1)))]


async def short_latencies(url: str, n: int, concurrency: int) -> list[float]:
    out: list[float] = []
    it = iter(range(n))
    async with aiohttp.ClientSession() as s:
        async def worker() -> None:
            for _ in it:
                t = time.perf_counter()
                async with s.post(url, data=SHORT, headers={"content-type": "application/json"}) as r:
                    await r.read()
                    assert r.status == 200, r.status
                out.append(time.perf_counter() - t)
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return out


async def long_load(url: str, stop: asyncio.Event, concurrency: int, done: list[int]) -> None:
    async with aiohttp.ClientSession() as s:
        async def worker(k: int) -> None:
            i = k
            while not stop.is_set():
                async with s.post(url, data=long_body(i), headers={"content-type": "application/json"}) as r:
                    await r.read()
                done[0] += 1
                i += concurrency
        await asyncio.gather(*(worker(k) for k in range(concurrency)))


async def measure(url: str, args: argparse.Namespace) -> dict[str, list[float]]:
    await short_latencies(url, 50, 4)  # warm up
    idle = await short_latencies(url, args.short, 4)
    stop, done = asyncio.Event(), [0]
    bg = asyncio.create_task(long_load(url, stop, args.long_concurrency, done))
    await asyncio.sleep(3)  # let the worker fill up
    busy = await short_latencies(url, args.short, 4)
    stop.set()
    await bg
    return {"idle": idle, "busy": busy, "long_done": [float(done[0])]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--short", type=int, default=300)
    ap.add_argument("--long-concurrency", type=int, default=2)
    args = ap.parse_args()
    force_offline()
    install_tiktoken_cache()
    from extproc.compression.tinymodel import build_full_shape_model

    root = Path(tempfile.mkdtemp(prefix="aigrid-rucomp-"))
    model = build_full_shape_model(root / "full-bert-base-multilingual-cased")
    st = make_stack(root)
    try:
        gw = st.add_gateway(extra={"compression": {
            "enabled": True, "model_path": str(model), "ranker": "bm25", "fixed_rate": 0.5, "break_even": False,
            "min_prompt_tokens": 200, "deadline_ms": 20_000}})
        st.publish_load("edge", kv=0.1, ttl_ms=600_000)
        st.publish_load("remote", kv=0.1, ttl_ms=600_000)
        wait_pressure(gw, "edge", lambda p: p >= 0.0, timeout=60)
        res = asyncio.run(measure(gw.url("/v1/chat/completions"), args))
        compressed = gw.metric("aigrid_rewrites_total") or 0
    finally:
        st.group.stop_all()
    idle, busy = res["idle"], res["busy"]
    print(f"short requests (routing only): n={len(idle)} idle, n={len(busy)} while compressing "
          f"({int(res['long_done'][0])} long requests finished, {int(compressed)} compressed)")
    for name, q in (("p50", 50), ("p99", 99)):
        a, b = pct(idle, q) * 1000, pct(busy, q) * 1000
        print(f"  {name}: idle {a:.2f} ms, busy {b:.2f} ms, ratio {b / a:.2f}")
    print(f"  mean: idle {statistics.mean(idle) * 1000:.2f} ms, busy {statistics.mean(busy) * 1000:.2f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
