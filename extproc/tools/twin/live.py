"""Twin against the live path: the same requests through real Envoy, ext_proc, Redis and simulated
sites (`extproc/tools/stack/local.py`, `extproc/tools/loadtest/`), and through the twin, at the same rates.

The twin's requests become OpenAI bodies: RAG items with their documents' text, chat turns with filler
text of the planned token counts; every request sends max_tokens = its output length with ignore_eos,
so it has the same length on both sides.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
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


@dataclass(frozen=True, slots=True)
class Outcome:
    """One measured request as either side saw it: its class, TTFT and TPOT (None: it never finished),
    and whether its prompt kept every gold fact (None: not a RAG request)."""

    sla: str
    ttft_s: float | None
    tpot_s: float | None
    retained: bool | None = None


def figures(rows: list[Outcome], requests: int, window_s: float, slo: dict[str, Any]) -> dict[str, Any]:
    """requests/s, TTFT p50/p95, TPOT p95 and SLO attainment (overall and per class) over one side's
    measured requests, by the twin's own rule (`metrics.summarize`): a request meets its SLO when it
    finished, TTFT and TPOT are within its class's bounds, and no gold fact was lost. PURE."""
    done = [r for r in rows if r.ttft_s is not None and r.tpot_s is not None]
    ttft = [r.ttft_s for r in done]
    tpot = [r.tpot_s for r in done]

    def met(r: Outcome) -> bool:
        b = slo[r.sla]
        ttft_ms, tpot_ms = (b["ttft_ms"], b.get("tpot_ms")) if isinstance(b, dict) else (b.ttft_ms, b.tpot_ms)
        return (r.ttft_s is not None and r.tpot_s is not None and 1000 * r.ttft_s <= ttft_ms
                and (tpot_ms is None or 1000 * r.tpot_s <= tpot_ms) and r.retained is not False)

    classes: dict[str, Any] = {}
    for cls in sorted({r.sla for r in rows}):
        xs = [r for r in rows if r.sla == cls]
        classes[cls] = {"requests": len(xs), "attainment": round(sum(map(met, xs)) / len(xs), 4)}
    return {
        "requests": requests, "completed": len(done), "requests_per_s": round(len(done) / window_s, 3),
        "ttft_p50_ms": _ms(percentile(ttft, 50)), "ttft_p95_ms": _ms(percentile(ttft, 95)),
        "tpot_p95_ms": _ms(percentile(tpot, 95)),
        "attainment": round(sum(map(met, rows)) / requests, 4) if requests else None,
        "gold_lost": sum(1 for r in rows if r.retained is False),
        "classes": classes,
    }


def _ms(x: float | None) -> float | None:
    return None if x is None else round(1000 * x, 1)


def live_outcomes(records: list[dict[str, Any]], reqs: list[Request], warmup_s: float, duration_s: float,
                  retained: dict[str, bool] | None = None) -> tuple[list[Outcome], int]:
    """The live side's measured requests (planned in [warmup, duration), as the twin measures), and how
    many were planned. `retained`: request id -> every gold fact still in the prompt the site got."""
    planned = {f"tw-{r.rid}": r for r in reqs if warmup_s <= r.at < duration_s}
    rows = []
    seen = set()
    for x in records:
        r = planned.get(x["id"])
        if r is None:
            continue
        seen.add(x["id"])
        ttft = x.get("ttft_s") if x.get("ok") else None
        n = x.get("completion_tokens") or r.output_tokens
        tpot = None
        if ttft is not None and x.get("e2e_s") is not None:
            tpot = (x["e2e_s"] - ttft) / (n - 1) if n > 1 else 0.0
        kept = (retained or {}).get(x["id"], True) if r.kind == "rag" else None
        rows.append(Outcome(r.sla, ttft, tpot, kept))
    # A planned request with no record at all (never sent: the run stopped first) is a miss too.
    rows += [Outcome(r.sla, None, None) for k, r in planned.items() if k not in seen]
    return rows, len(planned)


def twin_outcomes(flights: list[Any], warmup_s: float, duration_s: float) -> tuple[list[Outcome], int]:
    rows = []
    for f in flights:
        if not warmup_s <= f.req.at < duration_s:
            continue
        ttft = tpot = None
        if f.first is not None and f.done is not None:
            ttft = f.first - f.sent
            n = f.req.output_tokens
            tpot = (f.done - f.first) / (n - 1) if n > 1 else 0.0
        rows.append(Outcome(f.req.sla, ttft, tpot, f.retained if f.req.kind == "rag" else None))
    return rows, len(rows)


def live_retention(site_records: list[dict[str, Any]], reqs: list[Request], corpus: Any) -> dict[str, bool]:
    """Request id -> every gold fact of its RAG item still in the prompt a site received (the sites'
    `GET /_aigrid/records`; a request the gateway compressed arrives rewritten)."""
    by_id = {f"tw-{r.rid}": r for r in reqs if r.kind == "rag"}
    out: dict[str, bool] = {}
    for rec in site_records:
        rid = rec.get("headers", {}).get(REQUEST_ID_HEADER)
        r = by_id.get(rid or "")
        if r is None:
            continue
        try:
            body = json.loads(base64.b64decode(rec["body_b64"]))
            text = "\n".join(str(m.get("content", "")) for m in body.get("messages", []))
        except (ValueError, KeyError, TypeError, AttributeError):
            out[rid] = False  # unreadable: counted as lost rather than guessed kept
            continue
        out[rid] = all(n in text for n in corpus.items[r.item].needles)
    return out


def _rel(twin: float | None, live: float | None) -> float | None:
    return None if twin is None or not live else round(twin / live - 1, 4)


def compare_side(live: dict[str, Any], twin: dict[str, Any]) -> dict[str, Any]:
    """Twin against live, relative (twin / live - 1), with the issue's bounds: requests/s and SLO
    attainment within 10%, p95 TTFT and p95 TPOT within 20%."""
    d = {k: _rel(twin.get(k), live.get(k)) for k in ("requests_per_s", "ttft_p95_ms", "tpot_p95_ms", "attainment")}
    att_ok = d["attainment"] is not None and abs(d["attainment"]) <= 0.10
    return {"rps_diff": d["requests_per_s"], "ttft_p95_diff": d["ttft_p95_ms"], "tpot_p95_diff": d["tpot_p95_ms"],
            "attainment_diff": d["attainment"],
            "rps_within_10pct": d["requests_per_s"] is not None and abs(d["requests_per_s"]) <= 0.10,
            "ttft_p95_within_20pct": d["ttft_p95_ms"] is not None and abs(d["ttft_p95_ms"]) <= 0.20,
            "tpot_p95_within_20pct": d["tpot_p95_ms"] is not None and abs(d["tpot_p95_ms"]) <= 0.20,
            "attainment_within_10pct": att_ok}
