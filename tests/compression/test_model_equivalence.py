"""Our inference path keeps exactly the words llmlingua's compress_prompt keeps (same model, same rate).

compress_prompt pads every chunk to 512, runs chunks one batch of its own and counts tokens word by word;
we pad to the longest chunk, batch chunks from several texts together and cache word counts. The keep
decision must not change. Compared in "wordpiece" mode (llmlingua's own word definition)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.compression.model import FinePipeline, TokenClassifier
from extproc.compression.tinymodel import generate_text

CASES = [  # (sentences, seed): short, medium, and > 512 tokens (several chunks)
    (3, 0),
    (12, 1),
    (30, 2),
    (70, 3),
]
RATES = [0.33, 0.5, 0.7]


@pytest.fixture(scope="module")
def llmlingua_words(tiny_model_dir: Path) -> dict[tuple[int, int, float], tuple[list[str], list[str]]]:
    from llmlingua import PromptCompressor

    pc = PromptCompressor(model_name=str(tiny_model_dir), use_llmlingua2=True, device_map="cpu")
    out = {}
    for n, seed in CASES:
        text = generate_text(n, seed=seed)
        for rate in RATES:
            res = pc.compress_prompt(text, rate=rate, return_word_label=True)
            pairs = [x.rsplit(" ", 1) for x in res["fn_labeled_original_prompt"].split("\t\t|\t\t")]
            out[(n, seed, rate)] = ([w for w, _ in pairs], [w for w, label in pairs if label == "1"])
    return out


@pytest.fixture(scope="module")
def ours(tiny_model_dir: Path) -> tuple[TokenClassifier, FinePipeline]:
    return TokenClassifier.load(tiny_model_dir), FinePipeline.load(tiny_model_dir, mode="wordpiece")


def test_same_words_kept_as_compress_prompt(llmlingua_words, ours) -> None:
    model, pipe = ours
    texts = {(n, seed): generate_text(n, seed=seed) for n, seed in CASES}
    prepared = {k: pipe.prepare(t) for k, t in texts.items()}
    assert max(len(p.chunks) for p in prepared.values()) >= 2, "some case must span several chunks"
    # All chunks of all texts in ONE padded-to-longest batch, as the worker does across requests.
    keys = [(k, ci) for k, p in prepared.items() for ci in range(len(p.inputs))]
    outs = dict(zip(keys, model.forward([prepared[k].inputs[ci] for k, ci in keys])))
    for (n, seed, rate), (ref_words, ref_kept) in llmlingua_words.items():
        prep = prepared[(n, seed)]
        text = texts[(n, seed)]
        probs = [outs[((n, seed), ci)] for ci in range(len(prep.inputs))]
        keep = pipe.keep_flags(prep, probs, rate)
        assert [text[s:e] for s, e in prep.units] == ref_words
        kept = [text[s:e] for (s, e), k in zip(prep.units, keep) if k]
        assert kept == ref_kept, (n, seed, rate)
        assert 0 < len(kept) < len(ref_words)


def test_word_mode_output_is_a_subsequence_of_whitespace_words(tiny_model_dir: Path, ours) -> None:
    model, _ = ours
    pipe = FinePipeline.load(tiny_model_dir, mode="word")
    text = generate_text(40, seed=7) + " id=user_42 https://example.com/a.b 3.14159"
    for rate in (0.3, 0.6):
        prep = pipe.prepare(text)
        out, n_after = pipe.finish(prep, model.forward(prep.inputs), rate)
        words, it = text.split(), iter(text.split())
        assert all(w in it for w in out.split())  # whole words only, in order
        assert 0.5 * rate * prep.tokens_before <= n_after <= 1.5 * rate * prep.tokens_before + 5
        assert len(out.split()) < len(words)
    assert pipe.finish(prep, [], 1.0) == (text, prep.tokens_before)
