"""Soak: the local grid (`aigrid up`'s: Redis, simulated GPU sites with agents, ext_proc with the
compressor's model worker, Envoy) under steady open-loop load for a set time. Printed at the end: client
errors, p50/p99 latency per minute and overall, and the RSS of ext_proc, Envoy and the compressor worker
— after warm-up and at the end, and the growth between (goal < 5%).

The compressor needs a model: a tiny LLMLingua-2-shaped one is built into the work directory (seconds)
unless --compression-model DIR names a real checkpoint. A third of the requests are long RAG prompts that
go through the compressor, the rest short chat turns; every prompt is distinct (no affinity pinning).

Usage: .venv/bin/python bench/soak.py [--duration 600] [--rate 10] [--warmup 60] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from extproc.gateway.compression.offline import force_offline, install_tiktoken_cache  # noqa: E402
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec  # noqa: E402
from extproc.tools.stack.local import LocalStack  # noqa: E402
from extproc.tools.stack.openloop import OpenLoop, summarize  # noqa: E402
from extproc.tools.stack.procs import free_port  # noqa: E402

# The local grid's sites serve under this name (LocalStack passes --served-model-name).
MODEL = "llama-3.1-8b"


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def compressor_worker(pid: int) -> list[int]:
    """The model worker among pid's descendants (a child of the compressor's forkserver), by the name it
    gives itself."""
    from extproc.gateway.compression.runtime.process import WORKER_COMM

    found, frontier = [], [pid]
    while frontier:
        for kid, _ in children(frontier.pop()):
            frontier.append(kid)
            try:
                if Path(f"/proc/{kid}/comm").read_text().strip() == WORKER_COMM:
                    found.append(kid)
            except OSError:
                pass
    return found


def children(pid: int) -> list[tuple[int, str]]:
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append((int(d.name), (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")))
        except (OSError, ValueError, IndexError):
            continue
    return out


def make_bodies(n: int = 64) -> list[bytes]:
    rng = random.Random(11)
    spec = SyntheticRagSpec(prompt_tokens={"median": 900, "sigma": 0.2, "min": 600, "max": 1400}, documents_min=3, documents_max=5,
                   japanese_share=0.0)
    out = []
    for i in range(n):
        if i % 3 == 0:
            item = synth_rag_item(rng, spec)
            out.append(json.dumps({"model": MODEL, "max_tokens": 16, "messages": rag_messages(item)}).encode())
        else:
            out.append(b"")  # short turn, built per request (distinct text)
    return out


def gateway_counters(port: int) -> dict[str, float]:
    """Compressions done and skipped (by reason), from the gateway's own metrics."""
    import urllib.request  # noqa: PLC0415

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()  # noqa: S310
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("aigrid_rewrites_total "):
            out["rewritten"] = float(line.split()[-1])
        elif line.startswith("aigrid_rewrite_skips_total{"):
            out["skip_" + line.split('reason="', 1)[1].split('"', 1)[0]] = float(line.split()[-1])
    return out


def growth(first: int | None, last: int | None) -> float | None:
    if not first or not last:
        return None
    return (last - first) / first


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=600, help="seconds of load (default 600)")
    ap.add_argument("--rate", type=float, default=10, help="requests per second, open loop (default 10)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (default 10%% of duration, at least 5)")
    ap.add_argument("--sample", type=float, default=5, help="RSS sampling interval, s (default 5)")
    ap.add_argument("--compression-model", default=None, help="LLMLingua-2 checkpoint directory (default: a tiny built one)")
    ap.add_argument("--no-compression", action="store_true", help="routing only: no compressor worker (faster start, for CI)")
    ap.add_argument("--workdir", default=None, help="grid config and logs (default: a temporary directory)")
    ap.add_argument("--json", default=None, help="write the result here as JSON")
    args = ap.parse_args()
    warmup = args.warmup if args.warmup is not None else max(5.0, 0.1 * args.duration)

    force_offline()
    install_tiktoken_cache()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="aigrid-soak-"))
    model = args.compression_model
    if model is None and not args.no_compression:
        from extproc.tools.evalcompress.tinymodel import build_tiny_model  # noqa: PLC0415

        model = str(build_tiny_model(work / "models" / "tiny-bert-base-multilingual-cased"))
    bodies = make_bodies()

    def body(seq: int) -> bytes:
        b = bodies[seq % len(bodies)]
        if b:
            return b
        text = f"Turn {seq}: what does a {seq % 97}-km span add to the latency of an optical link?"
        return json.dumps({"model": MODEL, "max_tokens": 16, "messages": [{"role": "user", "content": text}]}).encode()

    stack = LocalStack(
        work / "grid", envoy_port=free_port(), admin_port=free_port(), upstream="sim",
        compression={} if args.no_compression else {
            "enabled": True, "model_path": model, "ranker": "bm25", "break_even": False, "min_prompt_tokens": 300,
            "fixed_rate": 0.6, "deadline_ms": 1000},
    )
    samples: list[dict] = []
    with stack:
        serve = stack.serve_proc
        envoy = stack.process("envoy")
        worker = compressor_worker(serve.pid)
        pids = {"ext_proc": serve.pid, "envoy": envoy.pid, "compressor": worker[0] if worker else None}
        print(f"soak: {args.duration:.0f}s at {args.rate:g} req/s through {stack.url}; RSS of {pids}", flush=True)
        load = OpenLoop(f"{stack.url}/v1/chat/completions", body, args.rate, timeout_s=60).start()
        t0 = time.monotonic()
        next_sample = t0
        while (now := time.monotonic()) - t0 < args.duration:
            stack.supervise()
            if now >= next_sample:
                samples.append({"t": round(now - t0, 1), **{k: rss_kib(p) if p else None for k, p in pids.items()}})
                next_sample += args.sample
            time.sleep(0.2)
        outcomes = load.stop()
        compression = gateway_counters(stack.metrics_port)
        samples.append({"t": round(time.monotonic() - t0, 1), **{k: rss_kib(p) if p else None for k, p in pids.items()}})
        restarts = {p.name: p.restarts for p in stack.group.procs if p.restarts}

    s = summarize(outcomes)
    base = next((x for x in samples if x["t"] >= warmup), samples[0])
    last = samples[-1]
    per_minute = []
    start = outcomes[0].start if outcomes else 0
    for m in range(int(args.duration // 60) + 1):
        chunk = [o for o in outcomes if m * 60 <= o.start - start < (m + 1) * 60]
        if chunk:
            cs = summarize(chunk)
            per_minute.append({"minute": m, "sent": cs.sent, "errors": cs.errors, "p50_ms": round(cs.p50_ms, 1), "p99_ms": round(cs.p99_ms, 1)})
    result = {
        "duration_s": args.duration, "rate": args.rate, "warmup_s": warmup,
        "sent": s.sent, "ok": s.ok, "errors": s.errors, "error_kinds": s.error_kinds,
        "p50_ms": round(s.p50_ms, 1), "p99_ms": round(s.p99_ms, 1), "per_minute": per_minute,
        "rss_kib_after_warmup": {k: base[k] for k in pids}, "rss_kib_end": {k: last[k] for k in pids},
        "rss_growth": {k: growth(base[k], last[k]) for k in pids}, "restarts": restarts, "compression": compression, "samples": samples,
    }
    print(f"soak: sent {s.sent}, ok {s.ok}, client errors {s.errors} {s.error_kinds or ''}; p50 {s.p50_ms:.1f} ms, p99 {s.p99_ms:.1f} ms")
    for m in per_minute:
        print(f"  minute {m['minute']}: sent {m['sent']}, errors {m['errors']}, p50 {m['p50_ms']} ms, p99 {m['p99_ms']} ms")
    for k in pids:
        g = result["rss_growth"][k]
        print(f"  RSS {k}: {base[k]} KiB after {base['t']:.0f}s warm-up → {last[k]} KiB at {last['t']:.0f}s"
              + (f" ({100 * g:+.2f}%)" if g is not None else ""))
    print(f"  compression: {compression}")
    if restarts:
        print(f"  restarted during the soak: {restarts}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0 if s.errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
