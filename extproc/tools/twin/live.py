"""Twin against the live path: the same requests through real Envoy, ext_proc, Redis and simulated
sites (`extproc/tools/stack/local.py`, `extproc/tools/loadtest/`), and through the twin, at the same rates.

The twin's requests become OpenAI bodies: RAG items with their documents' text, chat turns with filler
text of the planned token counts; every request sends max_tokens = its output length with ignore_eos,
so it has the same length on both sides.
"""

from __future__ import annotations

from typing import Any

from extproc.tools.loadtest.workloads import (
    PRIORITY_HEADER,
    REQUEST_ID_HEADER,
    PlannedRequest,
)
from extproc.tools.twin.metrics import percentile
from extproc.tools.workload.generate import Request
from extproc.tools.workload.rag import build_corpus, rag_messages
from extproc.tools.workload.spec import WorkloadSpec

_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


def _text(n: int, salt: int) -> str:
    # " alpha" etc. are one cl100k token each: n words ~ n tokens.
    return " ".join(_WORDS[(salt + i) % len(_WORDS)] for i in range(max(1, n)))


def planned_requests(spec: WorkloadSpec, reqs: list[Request], model: str) -> list[Any]:
    corpus = build_corpus(spec.rag)
    out = []
    for i, r in enumerate(reqs):
        gold = None
        if r.kind == "rag":
            it = corpus.items[r.item]
            messages = rag_messages(it)
            gold = it.answer
            conv = None
        else:
            messages = [{"role": "system", "content": _text(spec.chat.system_tokens, 0)}]
            for key, n in r.segments[1:]:
                if key.startswith(f"c{r.conv}:u"):
                    k = int(key.rsplit("u", 1)[1])
                    body = _text(n - 3, k)
                    messages.append({"role": "user", "content": (f"[c{r.conv}] " + body) if k == 1 else body})
                elif key.startswith(f"c{r.conv}:a"):
                    messages.append({"role": "assistant", "content": _text(n - 3, 7)})
            conv = f"c{r.conv}"
        body = {"model": model, "messages": messages, "max_tokens": r.output_tokens, "ignore_eos": True,
                "temperature": 0, "stream": True, "stream_options": {"include_usage": True}, "seed": r.rid}
        headers = {PRIORITY_HEADER: r.sla, REQUEST_ID_HEADER: f"tw-{r.rid}"}
        out.append(PlannedRequest(i, r.kind, r.sla, r.at, body, headers, r.prompt_tokens, "en", gold, conv, r.turn))
    return out


def live_figures(records: list[dict[str, Any]], reqs: list[Request], warmup_s: float, duration_s: float) -> dict[str, Any]:
    """requests/s and p95 TTFT over the requests planned in [warmup, duration), as the twin measures."""
    planned = {f"tw-{r.rid}": r for r in reqs}
    ok = [x for x in records if x.get("ok") and x["id"] in planned and warmup_s <= planned[x["id"]].at < duration_s]
    n = sum(1 for r in reqs if warmup_s <= r.at < duration_s)
    ttft = [x["ttft_s"] for x in ok if x.get("ttft_s") is not None]
    return {"requests": n, "completed": len(ok), "requests_per_s": len(ok) / (duration_s - warmup_s),
            "ttft_p95_ms": None if not ttft else round(1000 * percentile(ttft, 95), 1),
            "errors": sum(1 for x in records if not x.get("ok"))}


def twin_figures(flights: list[Any], warmup_s: float, duration_s: float) -> dict[str, Any]:
    fl = [f for f in flights if warmup_s <= f.req.at < duration_s]
    done = [f for f in fl if f.done is not None]
    ttft = [f.first - f.sent for f in fl if f.first is not None]
    return {"requests": len(fl), "completed": len(done), "requests_per_s": len(done) / (duration_s - warmup_s),
            "ttft_p95_ms": None if not ttft else round(1000 * percentile(ttft, 95), 1)}


def compare_side(live: dict[str, Any], twin: dict[str, Any]) -> dict[str, Any]:
    rps = twin["requests_per_s"] / live["requests_per_s"] - 1 if live["requests_per_s"] else None
    p95 = (twin["ttft_p95_ms"] / live["ttft_p95_ms"] - 1) if live["ttft_p95_ms"] and twin["ttft_p95_ms"] else None
    return {"rps_diff": rps, "ttft_p95_diff": p95,
            "rps_within_10pct": rps is not None and abs(rps) <= 0.10,
            "ttft_p95_within_20pct": p95 is not None and abs(p95) <= 0.20}
