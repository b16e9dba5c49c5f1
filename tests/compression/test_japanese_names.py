"""Japanese in the fine step: names the dictionary does not know (kana ship and company names) never lose
characters, and no kept span splits a morpheme. Property-tested on the policy side's path (prepare →
any subsequence the model might keep → restore)."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.gateway.compression.core.coarse import katakana_name, morpheme_spans_of, unknown_name_spans
from extproc.gateway.compression.core.pipeline import _prepare
from extproc.gateway.compression.core.segment import Piece, restore

KATA = ["カ", "ル", "ミ", "ナ", "ト", "セ", "リ", "ア", "ノ", "ヴェ", "ロ", "サ", "キ", "ネ", "ラ", "ソ", "ユ", "メ", "ダ", "ホ"]
HIRA = ["さ", "く", "な", "み", "あ", "お", "き", "ほ", "し", "ゆ", "ふ", "か", "た", "ま", "の", "せ"]
WORDS = ["貨物は", "横浜港を", "出港しました", "コンテナ", "本を積み", "研究室で", "初めて合成されました", "社名を",
         "に変更しました", "2024年", "3月", "の", "が", "、", "売上高は", "億円でした", "船は", "改名されました"]

kata_name = st.lists(st.sampled_from(KATA), min_size=3, max_size=5).map("".join)
maru_name = st.lists(st.sampled_from(HIRA), min_size=2, max_size=4).map(lambda xs: "".join(xs) + "丸")
segment = st.one_of(st.sampled_from(WORDS), st.sampled_from(WORDS), kata_name, maru_name)
sentence = st.lists(segment, min_size=3, max_size=12).map(lambda xs: "".join(xs) + "。")
text = st.lists(sentence, min_size=1, max_size=4).map("".join)


def _whole_morphemes(original: str, out: str) -> bool:
    """Is `out` (whitespace ignored) a concatenation of whole morphemes of `original`, in order?"""
    ms = [original[a:b] for a, b in morpheme_spans_of(original)]
    target = "".join(out.split())
    reach = {0}  # positions in target reachable after some prefix of the morphemes
    for m in ms:
        reach |= {p + len(m) for p in reach if target.startswith(m, p)}
    return len(target) in reach


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text, st.integers(0, 2**32 - 1), st.floats(0.1, 0.9))
def test_names_whole_and_no_morpheme_split(t: str, seed: int, rate: float) -> None:
    (p,) = _prepare([Piece(t, True)])
    rng = random.Random(seed)
    kept = "".join(ch for ch in t if rng.random() < rate)  # any subsequence of characters a model may keep
    out = restore(p.text, kept, p.atoms, groups=p.groups)
    assert out is not None
    for a, b in unknown_name_spans(t):
        assert t[a:b] in out  # kept whole, every character
    assert _whole_morphemes(t, out), (t, out)


def test_the_names_the_dictionary_does_not_know() -> None:
    t = "出荷番号SHP-30498の貨物は、博多港をみずほ丸で出港しました。さたま丸はカサネ海運に買い取られ、ほしな丸と改名されました。"
    assert [t[a:b] for a, b in unknown_name_spans(t)] == ["みずほ丸", "さたま丸", "カサネ", "ほしな丸"]
    assert katakana_name("カサネ") and not katakana_name("コンテナ")
    # Without the name atoms, a model keeping a few characters cuts them: the check can fail.
    p = Piece(t, True)
    cut = restore(t, "みず出港さた海運", p.atoms)
    assert cut is not None and "みずほ丸" not in cut
    (q,) = _prepare([p])
    whole = restore(t, "みず出港さた海運", q.atoms, groups=q.groups)
    assert whole is not None and all(n in whole for n in ("みずほ丸", "さたま丸", "カサネ", "ほしな丸"))
