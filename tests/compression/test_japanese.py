"""Japanese word units (fugashi + unidic-lite), script safety, and rejoining without inserted spaces."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.gateway.compression.core.japanese import classify, is_extender, merge_graphemes, word_units
from extproc.gateway.compression.runtime.model import FinePipeline, TokenClassifier
from extproc.tools.evalcompress.tinymodel import generate_text


def _words(text: str) -> list[str]:
    units = word_units(text)
    assert units is not None
    return [text[s:e] for s, e in units]


def test_morphemes_not_kana_runs() -> None:
    assert _words("キャリア網は分散AI推論基盤") == ["キャリア", "網", "は", "分散", "AI", "推論", "基盤"]
    # kana-only phrase that BERT would keep or drop whole is split into words
    assert len(_words("ひらがなとカタカナがまざっています")) >= 5


def test_spaced_words_stay_whole_in_mixed_text() -> None:
    words = _words("推論基盤は GPU-cluster_01 と https://example.com/x.y を使う")
    assert "GPU-cluster_01" in words and "https://example.com/x.y" in words


def test_classify_scripts() -> None:
    assert classify("The gateway routes requests.") == "spaced"
    assert classify("東京の拠点は負荷が高い") == "japanese"
    assert classify("这是一个很长的中文句子没有空格") == "unsupported"  # Han without kana: cannot segment
    assert classify("สวัสดีครับผมชื่อสมชาย") == "unsupported"  # Thai
    assert classify("The model 推論 is fast") == "spaced"  # a short Han word is just a word
    assert word_units("这是一个很长的中文句子没有空格") is None


def test_graphemes_never_split() -> None:
    text = "家族👨\u200d👩\u200d👧です"
    units = word_units(text)
    assert units is not None
    for s, e in units:
        assert not is_extender(text[s])
        assert text[s - 1] != "\u200d" or s == 0
    assert merge_graphemes("ab\u0301", [(0, 1), (1, 2), (2, 3)]) == [(0, 1), (1, 3)]


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["東京", "は", "です", "。", " ", "AI", "推論", "ひらがな", "カタカナ", "👍", "\u200d", "\u0301",
             "\ufe0f", "x", "3.14", "、", "\u3000", "\n", "🇯🇵", "ｶﾀｶﾅ"]
        ),
        max_size=25,
    )
)
def test_units_cover_every_visible_char_and_respect_graphemes(parts: list[str]) -> None:
    text = "".join(parts)
    units = word_units(text)
    if units is None:
        return
    covered = set()
    prev_end = 0
    for s, e in units:
        assert prev_end <= s < e <= len(text)
        assert not text[s:e].isspace()
        assert not is_extender(text[s]) or s == 0 or text[s - 1].isspace()
        covered.update(range(s, e))
        prev_end = e
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())


@pytest.fixture(scope="module")
def word_pipeline(tiny_model_dir: Path) -> tuple[TokenClassifier, FinePipeline]:
    return TokenClassifier.load(tiny_model_dir), FinePipeline.load(tiny_model_dir, mode="word")


def test_japanese_compression_inserts_no_spaces(word_pipeline) -> None:
    model, pipe = word_pipeline
    text = generate_text(12, seed=3, japanese=True)
    assert " " not in text
    prep = pipe.prepare(text)
    assert prep is not None
    morphemes = [text[s:e] for s, e in prep.units]
    for rate in (0.4, 0.7):
        out, n_after = pipe.finish(prep, model.forward(prep.inputs), rate)
        assert " " not in out and out
        assert n_after < prep.tokens_before
        # out is a concatenation of an in-order subsequence of whole morphemes
        rest = out
        for m in morphemes:
            if rest.startswith(m):
                rest = rest[len(m):]
        assert rest == ""


def test_unsafe_text_left_alone(word_pipeline) -> None:
    model, pipe = word_pipeline
    assert pipe.prepare("这是一个很长的中文句子没有空格，我们不能安全地压缩它。") is None
    assert pipe.prepare("lone \ud800 surrogate") is None
    assert pipe.compress_sync(model, ["สวัสดีครับผมชื่อสมชายครับ"], 0.5) == ["สวัสดีครับผมชื่อสมชายครับ"]
