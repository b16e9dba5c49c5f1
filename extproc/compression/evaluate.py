"""Quality evaluation of the compressor on a RAG QA set (`aigrid eval-compression`).

Each item becomes a real chat/completions request (documents as "Document [i]:" markers, <document> tags,
【文書i】 headers, or one message per document, as the item's `format` says) and goes through the same
pipeline the gateway runs (segment → coarse → fine → restore → rebuild) at each requested rate, with the
load policy bypassed. Measured per item and rate:
  * answer retention: the gold answer string is still in the gold document's text after compression
    (whitespace-normalised; no whitespace at all for Japanese);
  * gold retention: the gold document was not dropped by the coarse step;
  * gold@1: the ranker put the gold document first (a property of the ranker, independent of the rate);
  * achieved rate: compressible tokens after / before (the requested rate applies to those);
  * latency: wall time of the pipeline call.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from extproc.compression.coarse import CoarseRanker
from extproc.compression.fine import FineCompressor
from extproc.compression.rewriter import CompressionPipeline
from extproc.compression.settings import CompressionSettings

DEFAULT_DATA = Path(__file__).resolve().parent / "data" / "rag_eval.jsonl"
PATH = "/v1/chat/completions"


def load_items(path: str | Path) -> list[dict[str, Any]]:
    items = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                items.append(json.loads(line))
    return items


def build_request(item: dict[str, Any]) -> dict[str, Any]:
    docs: list[str] = item["documents"]
    ja = item["lang"] == "ja"
    q_label = "質問：" if ja else "Question: "
    intro = "以下の文書を参考に質問に答えてください。" if ja else "Answer the question using the documents below."
    fmt = item.get("format", "markers")
    if fmt == "messages":
        messages: list[dict[str, Any]] = [{"role": "system", "content": intro}]
        messages += [{"role": "user", "content": d} for d in docs]
        messages.append({"role": "user", "content": q_label + item["question"]})
    else:
        if fmt == "tags":
            parts = [f'<document id="{i + 1}">\n{d}\n</document>' for i, d in enumerate(docs)]
        elif fmt == "ja_headers":
            parts = [f"【文書{i + 1}】\n{d}" for i, d in enumerate(docs)]
        else:
            parts = [f"Document [{i + 1}]: {d}" for i, d in enumerate(docs)]
        content = intro + "\n\n" + "\n\n".join(parts) + "\n\n" + q_label + item["question"]
        messages = [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": content}]
    return {"model": "eval", "messages": messages, "temperature": 0, "max_tokens": 64}


def _norm(text: str, lang: str) -> str:
    return re.sub(r"\s+", "", text) if lang == "ja" else re.sub(r"\s+", " ", text).strip()


@dataclass(frozen=True, slots=True)
class ItemResult:
    id: str
    lang: str
    rate: float
    answer_kept: bool
    gold_kept: bool
    gold_top1: bool
    achieved: float
    prompt_ratio: float
    latency_ms: float
    docs_found: bool
    fine: str
    ranker: str


async def evaluate(
    items: Sequence[dict[str, Any]],
    rates: Sequence[float],
    *,
    settings: CompressionSettings,
    fine: FineCompressor | None,
    ranker: CoarseRanker | None,
    deadline_s: float = 120.0,
) -> list[ItemResult]:
    pipe = CompressionPipeline(settings, fine, ranker)
    out: list[ItemResult] = []
    for item in items:
        body = build_request(item)
        seg = pipe.segment(PATH, body)
        found = len(seg.documents) == len(item["documents"])
        top1 = False
        if ranker is not None and seg.rag and found:
            rk = await ranker.rank(seg.question, [d.text for d in seg.documents])
            top1 = max(range(len(rk.scores)), key=lambda i: rk.scores[i]) == item["gold"]
        for rate in rates:
            t0 = time.perf_counter()
            o = await pipe.compress(PATH, body, rate, deadline_s)
            ms = (time.perf_counter() - t0) * 1000
            gold = item["gold"]
            if found and o.doc_texts_after:
                gold_text = o.doc_texts_after[gold]
                gold_kept = gold in o.kept_docs
            elif found:  # nothing changed
                gold_text, gold_kept = seg.documents[gold].text, True
            else:  # segmentation missed the documents: judge on the whole prompt
                gold_text = json.dumps(o.body or body, ensure_ascii=False)
                gold_kept = item["answer"] in gold_text
            answer_kept = _norm(item["answer"], item["lang"]) in _norm(gold_text, item["lang"])
            achieved = o.comp_after / o.comp_before if o.comp_before else 1.0
            ratio = o.tokens_after / o.tokens_before if o.tokens_before else 1.0
            out.append(ItemResult(item["id"], item["lang"], rate, answer_kept, gold_kept, top1, achieved, ratio,
                                  ms, found, o.fine, o.ranker))
    return out


def _pct(xs: Sequence[float], q: float) -> float:
    if not xs:
        return 0.0
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def summarize(results: Sequence[ItemResult]) -> list[dict[str, Any]]:
    """One row per (language, rate), plus 'all' per rate."""
    rows: list[dict[str, Any]] = []
    rates = sorted({r.rate for r in results})
    langs = sorted({r.lang for r in results}) + ["all"]
    for rate in rates:
        for lang in langs:
            sel = [r for r in results if r.rate == rate and (lang == "all" or r.lang == lang)]
            if not sel:
                continue
            n = len(sel)
            lat = [r.latency_ms for r in sel]
            rows.append({
                "lang": lang,
                "rate": rate,
                "n": n,
                "answer_retention": sum(r.answer_kept for r in sel) / n,
                "gold_retention": sum(r.gold_kept for r in sel) / n,
                "gold_top1": sum(r.gold_top1 for r in sel) / n,
                "achieved_rate": statistics.fmean(r.achieved for r in sel),
                "prompt_ratio": statistics.fmean(r.prompt_ratio for r in sel),
                "latency_ms_p50": _pct(lat, 0.5),
                "latency_ms_p95": _pct(lat, 0.95),
                "segmented_ok": sum(r.docs_found for r in sel) / n,
                "rankers": sorted({r.ranker for r in sel if r.ranker}),
                "fine": sorted({r.fine for r in sel}),
            })
    return rows


def report_json(rows: list[dict[str, Any]], results: Sequence[ItemResult], meta: dict[str, Any]) -> str:
    return json.dumps({"meta": meta, "summary": rows, "items": [asdict(r) for r in results]}, ensure_ascii=False, indent=1)
