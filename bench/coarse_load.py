"""The dense coarse ranker under the reference workload: CPU per request with documents reused, and the
share of RAG requests that fall back to BM25 at compression's goodput rate.

The reference scenario's workload (`extproc/tools/twin/reference.yaml`: 70% RAG, Zipf-popular documents)
gives the requests, in order; only what the coarse ranker sees is used (the question and the documents).

1. CPU per request: each RAG request is ranked with the shipped default ranker (`auto`: MiniLM + BM25
   for English), with the sentence-vector cache (documents by content hash) and, as the baseline in the
   same run, without it. Thread CPU of the dense pass (`CoarseRanker.last_dense_cpu_s`), p50 / p95.
2. Fallback share: the same requests replayed in real time, open loop at `--rate` requests/s (default:
   C's goodput on the reference grid, docs/evaluation.md), through `CoarseRanker.rank` with the
   gateway's deadline; a request whose embedding thread is busy or late is ranked by BM25 alone
   (`bm25(busy)`, `bm25(timeout)`). Every RAG request is ranked here (the gateway ranks only those it
   compresses: an upper bound on the ranker's load).

    python bench/coarse_load.py [--rate 55] [--seconds 20] [--deadline-ms 850]

The last line is JSON with both numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extproc.gateway.compression.core.coarse import CoarseRanker  # noqa: E402
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario  # noqa: E402
from extproc.tools.workload.generate import generate_open_loop  # noqa: E402
from extproc.tools.workload.rag import build_corpus  # noqa: E402


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))] if s else 0.0


def rag_requests(rate: float, seconds: float, seed: int) -> list[tuple[float, str, list[str]]]:
    """(send time, question, documents) of each RAG request of the reference workload."""
    sc = load_scenario(REFERENCE_SCENARIO)
    corpus = build_corpus(sc.workload.rag)
    out = []
    for r in generate_open_loop(sc.workload, rate, seconds, seed):
        if r.kind == "rag":
            it = corpus.items[r.item]
            out.append((r.at, it.question, [d.text for d in it.docs]))
    return out


async def cpu_per_request(reqs: list[tuple[float, str, list[str]]], cache_docs: int) -> dict[str, float]:
    rk = CoarseRanker("auto", vector_cache_documents=cache_docs, vector_cache_floats=64 * 1024 * 1024 if cache_docs else 0)
    await rk.ready()
    cpu: list[float] = []
    for _, q, docs in reqs:
        rk.rank_sync(q, docs)
        cpu.append(rk.last_dense_cpu_s * 1000)
    n, hits, misses = rk.vector_cache_stats()
    await rk.close()
    return {"p50_ms": _pct(cpu, 0.5), "p95_ms": _pct(cpu, 0.95), "mean_ms": statistics.fmean(cpu),
            "doc_hit_share": hits / (hits + misses) if hits + misses else 0.0, "requests": len(cpu)}


async def fallback_share(reqs: list[tuple[float, str, list[str]]], deadline_s: float) -> dict[str, float]:
    rk = CoarseRanker("auto")
    await rk.ready()
    # Warm the cache as a running gateway's would be: the first 2 s of traffic, not counted.
    methods: list[str] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()

    async def one(at: float, q: str, docs: list[str]) -> None:
        await asyncio.sleep(max(0.0, t0 + at - loop.time()))
        r = await rk.rank(q, docs, deadline_s)
        if at >= 2.0:
            methods.append(r.method)

    await asyncio.gather(*(one(at, q, d) for at, q, d in reqs))
    await rk.close()
    n = len(methods)
    fell = sum(m.startswith("bm25") for m in methods)
    return {"requests": n, "bm25_fallback_share": fell / n if n else 0.0,
            "busy": sum(m == "bm25(busy)" for m in methods) / n if n else 0.0,
            "timeout": sum(m == "bm25(timeout)" for m in methods) / n if n else 0.0}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=55.0, help="requests/s (all kinds; default: C's goodput)")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--deadline-ms", type=float, default=850.0, help="the ranker's share of the 1 s deadline")
    args = ap.parse_args()
    reqs = rag_requests(args.rate, args.seconds, args.seed)
    print(f"{len(reqs)} RAG requests at {args.rate} req/s over {args.seconds} s; load average {os.getloadavg()[0]:.2f}")
    cold = await cpu_per_request(reqs, 0)
    warm = await cpu_per_request(reqs, 4096)
    print(f"dense CPU per request, no cache:  p50 {cold['p50_ms']:.1f} ms  p95 {cold['p95_ms']:.1f} ms")
    print(f"dense CPU per request, cached:    p50 {warm['p50_ms']:.1f} ms  p95 {warm['p95_ms']:.1f} ms  "
          f"(documents found in the cache: {warm['doc_hit_share']:.1%})")
    fb = await fallback_share(reqs, args.deadline_ms / 1000)
    print(f"real-time replay: {fb['requests']} ranked, BM25 fallback {fb['bm25_fallback_share']:.1%} "
          f"(busy {fb['busy']:.1%}, timeout {fb['timeout']:.1%}); load average {os.getloadavg()[0]:.2f}")
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "rag_requests": len(reqs),
                      "dense_cpu_ms_p50_cached": round(warm["p50_ms"], 2), "dense_cpu_ms_p95_cached": round(warm["p95_ms"], 2),
                      "dense_cpu_ms_p50_uncached": round(cold["p50_ms"], 2), "doc_cache_hit_share": round(warm["doc_hit_share"], 4),
                      "bm25_fallback_share": round(fb["bm25_fallback_share"], 4)}))


if __name__ == "__main__":
    asyncio.run(main())
