"""Bad input through our inference path: one word, special-token text, emoji, invisible text, huge words.
Output is always the input unchanged or a whitespace-word subsequence of it; never an exception."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extproc.gateway.compression.runtime.model import FinePipeline, TokenClassifier
from extproc.tools.evalcompress.tinymodel import generate_text


@pytest.fixture(scope="module")
def pipe(tiny_model_dir: Path) -> tuple[TokenClassifier, FinePipeline]:
    return TokenClassifier.load(tiny_model_dir), FinePipeline.load(tiny_model_dir, mode="word")


def _is_word_subsequence(out: str, text: str) -> bool:
    it = iter(text.split())
    return all(w in it for w in out.split())


def test_one_word_is_left_unchanged(pipe) -> None:
    model, p = pipe
    assert p.compress_sync(model, ["Hello"], 0.3) == ["Hello"]


def test_special_token_text_is_ordinary_text(pipe) -> None:
    model, p = pipe
    text = generate_text(6, seed=2) + " [SEP] [CLS] [MASK] [PAD] [UNK] <|endoftext|> " + generate_text(6, seed=3)
    prep = p.prepare(text)
    assert prep is not None
    # the literal "[SEP]" must not become the control token inside a chunk
    assert all(x.count(p.sep_id) <= 1 and x.count(p.cls_id) == 1 for x in prep.inputs)
    out = p.compress_sync(model, [text], 0.5)[0]
    assert _is_word_subsequence(out, text) and len(out) < len(text)


def test_invisible_only_and_emoji(pipe) -> None:
    model, p = pipe
    assert p.compress_sync(model, ["\u200b\u200b \u2060"], 0.5) == ["\u200b\u200b \u2060"]
    text = "Family 👨\u200d👩\u200d👧 emoji 👍🏽 " + generate_text(5)
    out = p.compress_sync(model, [text], 0.5)[0]
    assert _is_word_subsequence(out, text)


def test_long_unbroken_word_spanning_chunks(pipe) -> None:
    model, p = pipe
    # one whitespace word of ~1,400 model tokens (punctuation splits it for BERT, not for us)
    text = generate_text(5) + " " + "ab-" * 700 + " " + generate_text(5, seed=1)
    prep = p.prepare(text)
    assert prep is not None and len(prep.chunks) >= 2
    out = p.compress_sync(model, [text], 0.5)[0]
    assert _is_word_subsequence(out, text)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200), st.floats(0.05, 1.0))
def test_arbitrary_text_never_raises(pipe, text: str, rate: float) -> None:
    model, p = pipe
    out = p.compress_sync(model, [text], rate)[0]
    assert out == text or _is_word_subsequence(out, text)
    it = iter(text)
    assert all(ch in it for ch in out)  # a character subsequence: nothing invented
