"""Compressor benchmark: our batching worker vs llmlingua's compress_prompt, same model, same run.

The model has bert-base-multilingual-cased's shape with random weights (the real LLMLingua-2 checkpoint
is not reachable offline; the compute per token is the same). For each prompt length (cl100k tokens):
  * llmlingua: PromptCompressor(use_llmlingua2=True).compress_prompt(text, rate) one request at a time;
  * ours: BatchingCompressor under concurrent load (--concurrency requests in flight, batched by the
    worker): on CPU the torch backend with dynamic int8 (--onnx adds the ONNX Runtime backend, --fp32
    the fp32 variants); on GPU torch, batched vs one at a time;
tokens/s (cl100k prompt tokens in / wall second), p50/p99 latency per request, and the ratio to llmlingua.
It also samples the asyncio loop's lag (a 5 ms timer's overshoot) while our worker computes, idle vs
busy: the gRPC loop lives on such a loop, so this is the part of routing latency compression could add.

    python bench/compressor.py                      # CPU, about 3-5 minutes on 2 idle cores
    python bench/compressor.py --onnx --fp32        # CPU, every backend (several minutes more)
    python bench/compressor.py --device cuda        # GPU host: batched vs one at a time (ours) + llmlingua
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extproc.compression.offline import force_offline, install_tiktoken_cache  # noqa: E402

force_offline()
install_tiktoken_cache()


def pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def make_prompts(lengths: list[int], count, n: int) -> dict[int, list[str]]:
    """n distinct prompts per target length (cl100k tokens), cut at a sentence end past the target."""
    from extproc.compression.tinymodel import english_sentence
    import random

    out: dict[int, list[str]] = {}
    for L in lengths:
        out[L] = []
        for i in range(n):
            rng = random.Random(L * 1000 + i)
            parts: list[str] = []
            while count(" ".join(parts)) < L:
                parts.append(english_sentence(rng))
            out[L].append(" ".join(parts))
    return out


def row(name: str, L: int, lat: list[float], tokens: int, wall: float, cpu: float) -> dict:
    """cpu: process CPU seconds spent meanwhile. tokens per CPU-second is the figure that survives a
    shared, loaded machine (wall tokens/s there depends on what else runs)."""
    r = {"name": name, "len": L, "n": len(lat), "tps": tokens / wall, "tpc": tokens / max(cpu, 1e-9),
         "p50": pct(lat, 50), "p99": pct(lat, 99)}
    print(f"  {name:<28} len={L:>5}  n={r['n']:>2}  tok/s={r['tps']:>7.0f}  tok/cpu-s={r['tpc']:>7.0f}  "
          f"p50={r['p50'] * 1000:>7.0f} ms  p99={r['p99'] * 1000:>7.0f} ms", flush=True)
    return r


def llmlingua_run(pc, L: int, texts: list[str], rate: float) -> dict:
    lat, tokens = [], 0
    t0, c0 = time.perf_counter(), time.process_time()
    for text in texts:
        t = time.perf_counter()
        out = pc.compress_prompt(text, rate=rate)
        lat.append(time.perf_counter() - t)
        tokens += out["origin_tokens"]
    return row("llmlingua compress_prompt", L, lat, tokens, time.perf_counter() - t0, time.process_time() - c0)


async def _load(comp, prompts: list[str], rate: float, concurrency: int) -> tuple[list[float], int, float, float]:
    """Keep `concurrency` requests in flight until all prompts are done."""
    from extproc.compression.fine import FineResult

    lat: list[float] = []
    tokens = 0
    queue = list(prompts)

    async def client() -> None:
        nonlocal tokens
        while queue:
            text = queue.pop()
            t = time.perf_counter()
            r = await comp.compress([text], rate, 600.0)
            lat.append(time.perf_counter() - t)
            assert isinstance(r, FineResult), r
            tokens += r.tokens_before[0]

    t0, c0 = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return lat, tokens, time.perf_counter() - t0, time.process_time() - c0


async def loop_lag(duration_s: float, period_s: float = 0.005) -> list[float]:
    lags = []
    end = time.perf_counter() + duration_s
    while time.perf_counter() < end:
        t = time.perf_counter()
        await asyncio.sleep(period_s)
        lags.append(time.perf_counter() - t - period_s)
    return lags


async def start_ours(model_dir: Path, *, quantize: bool, device: str, dtype: str | None, threads: int,
                     batch_tokens: int, backend: str = "torch"):
    from extproc.compression.worker import BatchingCompressor

    t = time.perf_counter()
    comp = await asyncio.to_thread(
        BatchingCompressor.from_path, model_dir, quantize=quantize, device=device, dtype=dtype, backend=backend,
        num_threads=threads, max_queue=1024, max_batch_tokens=batch_tokens, round_tokens=batch_tokens,
        max_batch_size=256,
    )
    await asyncio.to_thread(comp.wait_ready, 120)
    print(f"  loaded ours backend={backend} int8={quantize} in {time.perf_counter() - t:.1f} s", flush=True)
    return comp


async def main_async(args: argparse.Namespace) -> None:
    import torch

    from extproc.compression.offline import cl100k
    from extproc.compression.tinymodel import build_full_shape_model

    torch.set_num_threads(args.threads)
    enc = cl100k()
    lengths = [int(x) for x in args.lengths.split(",")]
    prompts = make_prompts(lengths, lambda s: len(enc.encode_ordinary(s)), args.requests)
    gpu = args.device != "cpu" or args.compare_batching
    bt = args.batch_tokens or (32768 if args.device != "cpu" else 1024)
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        model_dir = build_full_shape_model(Path(tmp) / "bench-bert-base-multilingual-cased")
        print(f"built bert-base-multilingual-cased-shaped model (random weights) in {time.perf_counter() - t:.1f} s; "
              f"device={args.device} torch threads={args.threads} rate={args.rate} "
              f"requests/length={args.requests} concurrency={args.concurrency} "
              f"load average at start={os.getloadavg()[0]:.2f}", flush=True)
        from llmlingua import PromptCompressor

        pc = await asyncio.to_thread(
            PromptCompressor, model_name=str(model_dir), use_llmlingua2=True, device_map=args.device)
        # Ours: (label, compressor, concurrency). Same process, same threads as llmlingua.
        variants: list[tuple[str, object, int]] = []
        if not gpu:
            backends = ["torch"]
            if args.onnx:
                try:
                    import onnxruntime  # noqa: F401

                    backends.append("onnx")
                except ImportError:
                    print("  (onnxruntime not installed: torch backend only)")
            for backend in backends:
                for quant in ([True, False] if args.fp32 else [True]):
                    label = f"ours {backend} {'int8' if quant else 'fp32'}"
                    comp = await start_ours(model_dir, quantize=quant, device="cpu", dtype=None,
                                            threads=args.threads, batch_tokens=bt, backend=backend)
                    variants.append((label, comp, args.concurrency))
        else:
            comp = await start_ours(model_dir, quantize=False, device=args.device, dtype=args.dtype,
                                    threads=args.threads, batch_tokens=bt)
            variants += [("ours batched", comp, args.concurrency), ("ours one-at-a-time", comp, 1)]
        warm = prompts[min(prompts)][:2]
        await asyncio.to_thread(pc.compress_prompt, warm[0], rate=args.rate)
        for _, comp, _ in variants:
            await _load(comp, warm, args.rate, 2)
        # Interleaved per length, so background load on a shared machine hits both sides alike.
        base: dict[int, dict] = {}
        results: dict[str, dict[int, dict]] = {label: {} for label, _, _ in variants}
        for L in lengths:
            base[L] = await asyncio.to_thread(llmlingua_run, pc, L, prompts[L], args.rate)
            for label, comp, conc in variants:
                lat, tokens, wall, cpu = await _load(comp, prompts[L], args.rate, conc)
                results[label][L] = row(f"{label} c={conc}", L, lat, tokens, wall, cpu)
        label, comp, conc = variants[0]
        idle = await loop_lag(1.0)
        # Keep the worker busy for the 2 s window only; close() below answers what is still queued.
        busy_tasks = [asyncio.create_task(comp.compress([t], args.rate, 600.0)) for t in prompts[max(prompts)]]
        busy = await loop_lag(2.0)
        print(f"asyncio loop lag (5 ms timer overshoot) idle: p50={pct(idle, 50) * 1e3:.2f} ms "
              f"p99={pct(idle, 99) * 1e3:.2f} ms | while {label} computes: p50={pct(busy, 50) * 1e3:.2f} ms "
              f"p99={pct(busy, 99) * 1e3:.2f} ms (torch threads={args.threads}, {os.cpu_count()} cores)")
        for c in {id(c): c for _, c, _ in variants}.values():
            await c.close()
        await asyncio.gather(*busy_tasks)
        del pc
    print(f"load average at end={os.getloadavg()[0]:.2f}")
    print("\nratio of tokens/s to llmlingua compress_prompt one at a time (same model, same machine, same run):")
    for name, res in results.items():
        for key, what in (("tps", "wall tok/s"), ("tpc", "tok/cpu-s")):
            ratios = [res[L][key] / base[L][key] for L in lengths]
            print(f"  {name:<20} {what:<11} " + "  ".join(f"len={L}: {r:.2f}x" for L, r in zip(lengths, ratios))
                  + f"  | geomean {statistics.geometric_mean(ratios):.2f}x")
    if gpu:
        print("  GPU batched vs one-at-a-time (ours): " + "  ".join(
            f"len={L}: {results['ours batched'][L]['tps'] / results['ours one-at-a-time'][L]['tps']:.2f}x"
            for L in lengths))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--dtype", default=None, help="GPU only, e.g. float16")
    ap.add_argument("--threads", type=int, default=2, help="torch threads (same for both sides)")
    ap.add_argument("--lengths", default="128,512,2048", help="prompt lengths in cl100k tokens")
    ap.add_argument("--requests", type=int, default=None, help="prompts per length (CPU 4, GPU 32)")
    ap.add_argument("--concurrency", type=int, default=None, help="our requests in flight (CPU 4, GPU 16)")
    ap.add_argument("--batch-tokens", type=int, default=None, help="worker's padded tokens per forward pass")
    ap.add_argument("--rate", type=float, default=0.5)
    ap.add_argument("--fp32", action="store_true", help="CPU: also our fp32 variants (isolate padding/fusion)")
    ap.add_argument("--onnx", action="store_true",
                    help="CPU: also the ONNX Runtime backend (its one-time export takes 1-2 min on 2 cores)")
    ap.add_argument("--compare-batching", action="store_true",
                    help="the GPU variant's comparison (batched vs one at a time, fp32) on any device")
    args = ap.parse_args()
    big = args.device != "cpu"
    args.requests = args.requests or (32 if big else 4)
    args.concurrency = args.concurrency or (16 if big else 4)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
