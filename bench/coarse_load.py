"""The dense coarse ranker under the reference workload: CPU per request with documents reused, and the
share of RAG requests that fall back to BM25 at compression's goodput rate.

The reference scenario's workload (`extproc/tools/twin/reference.yaml`: 70% RAG, Zipf-popular documents)
gives the requests, in order; only what the coarse ranker sees is used (the question and the documents).
The first `--warm-seconds` of traffic fill the sentence-vector cache (steady state: the documents earlier
requests brought), unmeasured; then:

1. CPU per request (the next `--seconds`): each RAG request's dense pass with the shipped default ranker
   (`auto`: MiniLM + BM25 for English), run in the ranker's own embedding thread (one torch thread, as in
   the gateway), thread CPU time; the baseline in the same run: the first `--cold-requests` of them
   without the cache.
2. Fallback share (the `--seconds` after that): the requests replayed in real time, open loop at their own
   send times, through `CoarseRanker.rank` with the gateway's deadline; a request whose question and
   documents are all cached is scored without the encoder; the others wait for the encoder thread's next
   batched call, and one whose embedding is late, or that finds 64 already waiting, is ranked by BM25
   alone (`bm25(timeout)`, `bm25(busy)`). rank()'s wall time (the wait included) is reported too.
   Every RAG request is ranked here (the gateway ranks only those it compresses: an upper bound on the
   ranker's load). `--rate` defaults to C's goodput on the reference grid (docs/evaluation.md).

    python bench/coarse_load.py [--rate 55] [--seconds 10] [--warm-seconds 30] [--deadline-ms 850]

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


async def warmed_ranker(warm: list[tuple[float, str, list[str]]], cache_docs: int) -> CoarseRanker:
    """A ranker whose sentence-vector cache holds what the traffic before the measured window left there
    (the reference workload's document reuse in steady state), ranked in the embedding thread."""
    rk = CoarseRanker("auto", vector_cache_documents=cache_docs, vector_cache_floats=64 * 1024 * 1024 if cache_docs else 0)
    await rk.ready()
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(rk._embed_pool, rk._dense, "warm-up", ["warm-up"])
    for _, q, docs in warm:
        await loop.run_in_executor(rk._embed_pool, rk._dense, q, docs)
    return rk


async def cpu_per_request(rk: CoarseRanker, reqs: list[tuple[float, str, list[str]]]) -> dict[str, float]:
    """CPU of the dense pass per request, in request order, in the ranker's own embedding thread (one torch
    thread, as in the gateway): thread CPU time of that thread."""
    loop = asyncio.get_running_loop()

    def timed(q: str, docs: list[str]) -> tuple[float, bool]:
        encoded = rk._cached(q, docs)[0] is None  # the question must be encoded (docs: counted below)
        t = time.thread_time()
        rk._dense(q, docs)
        return (time.thread_time() - t) * 1000, encoded

    h0, m0 = rk.vector_cache_stats()[1:]
    got = [await loop.run_in_executor(rk._embed_pool, timed, q, docs) for _, q, docs in reqs]
    cpu = [c for c, _ in got]
    enc = [c for c, e in got if e]
    _, hits, misses = rk.vector_cache_stats()
    hits, misses = hits - h0, misses - m0
    return {"p50_ms": _pct(cpu, 0.5), "p95_ms": _pct(cpu, 0.95), "mean_ms": statistics.fmean(cpu),
            "doc_hit_share": hits / (hits + misses) if hits + misses else 0.0, "requests": len(cpu),
            "question_hit_share": 1 - len(enc) / len(got) if got else 0.0,
            "p50_ms_question_encoded": _pct(enc, 0.5), "p95_ms_question_encoded": _pct(enc, 0.95)}


async def fallback_share(rk: CoarseRanker, reqs: list[tuple[float, str, list[str]]], deadline_s: float) -> dict[str, float]:
    """Replay in real time (open loop at the requests' own send times) through `rank` with the deadline."""
    methods: list[str] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    first = reqs[0][0] if reqs else 0.0

    waits: list[float] = []

    async def one(at: float, q: str, docs: list[str]) -> None:
        await asyncio.sleep(max(0.0, t0 + at - first - loop.time()))
        t = loop.time()
        methods.append((await rk.rank(q, docs, deadline_s)).method)
        waits.append((loop.time() - t) * 1000)

    await asyncio.gather(*(one(at, q, d) for at, q, d in reqs))
    n = len(methods)
    fell = sum(m.startswith("bm25") for m in methods)
    return {"requests": n, "bm25_fallback_share": fell / n if n else 0.0,
            "busy": sum(m == "bm25(busy)" for m in methods) / n if n else 0.0,
            "timeout": sum(m == "bm25(timeout)" for m in methods) / n if n else 0.0,
            "rank_ms_p50": _pct(waits, 0.5), "rank_ms_p95": _pct(waits, 0.95)}


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=55.0, help="requests/s (all kinds; default: C's goodput)")
    ap.add_argument("--seconds", type=float, default=10.0, help="measured window (CPU), and as long a replay after it")
    ap.add_argument("--warm-seconds", type=float, default=30.0, help="traffic before the window that fills the cache")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--deadline-ms", type=float, default=850.0, help="the ranker's share of the 1 s deadline")
    ap.add_argument("--cold-requests", type=int, default=10, help="requests measured without the cache (baseline)")
    args = ap.parse_args()
    allreqs = rag_requests(args.rate, args.warm_seconds + 2 * args.seconds, args.seed)
    warm = [r for r in allreqs if r[0] < args.warm_seconds]
    cpu_win = [r for r in allreqs if args.warm_seconds <= r[0] < args.warm_seconds + args.seconds]
    replay = [r for r in allreqs if r[0] >= args.warm_seconds + args.seconds]
    print(f"reference workload at {args.rate} req/s: {len(warm)} RAG requests warm the cache ({args.warm_seconds} s), "
          f"{len(cpu_win)} measured for CPU, {len(replay)} replayed in real time; load average {os.getloadavg()[0]:.2f}",
          flush=True)
    cold_rk = await warmed_ranker([], 0)
    cold = await cpu_per_request(cold_rk, cpu_win[: args.cold_requests])
    await cold_rk.close()
    rk = await warmed_ranker(warm, 4096)
    warm_cpu = await cpu_per_request(rk, cpu_win)
    print(f"dense CPU per request, no cache ({cold['requests']} requests): p50 {cold['p50_ms']:.1f} ms  p95 {cold['p95_ms']:.1f} ms")
    print(f"dense CPU per request, cache warm ({warm_cpu['requests']} requests): p50 {warm_cpu['p50_ms']:.1f} ms  "
          f"p95 {warm_cpu['p95_ms']:.1f} ms  (documents found in the cache: {warm_cpu['doc_hit_share']:.1%}, "
          f"questions: {warm_cpu['question_hit_share']:.1%}; where the question was encoded: p50 "
          f"{warm_cpu['p50_ms_question_encoded']:.1f} ms  p95 {warm_cpu['p95_ms_question_encoded']:.1f} ms)", flush=True)
    fb = await fallback_share(rk, replay, args.deadline_ms / 1000)
    await rk.close()
    print(f"real-time replay: {fb['requests']} ranked, BM25 fallback {fb['bm25_fallback_share']:.1%} "
          f"(busy {fb['busy']:.1%}, timeout {fb['timeout']:.1%}); rank() wall time p50 {fb['rank_ms_p50']:.1f} ms  "
          f"p95 {fb['rank_ms_p95']:.1f} ms; load average {os.getloadavg()[0]:.2f}")
    warm = warm_cpu
    reqs = allreqs
    print(json.dumps({"rate": args.rate, "seconds": args.seconds, "warm_seconds": args.warm_seconds, "rag_requests": len(reqs),
                      "dense_cpu_ms_p50_cached": round(warm["p50_ms"], 2), "dense_cpu_ms_p95_cached": round(warm["p95_ms"], 2),
                      "dense_cpu_ms_p50_uncached": round(cold["p50_ms"], 2), "doc_cache_hit_share": round(warm["doc_hit_share"], 4),
                      "question_hit_share": round(warm["question_hit_share"], 4),
                      "dense_cpu_ms_p50_question_encoded": round(warm["p50_ms_question_encoded"], 2),
                      "dense_cpu_ms_p95_question_encoded": round(warm["p95_ms_question_encoded"], 2),
                      "bm25_fallback_share": round(fb["bm25_fallback_share"], 4),
                      "bm25_busy_share": round(fb["busy"], 4), "bm25_timeout_share": round(fb["timeout"], 4),
                      "rank_ms_p50": round(fb["rank_ms_p50"], 1), "rank_ms_p95": round(fb["rank_ms_p95"], 1),
                      "load_avg_end": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    asyncio.run(main())
