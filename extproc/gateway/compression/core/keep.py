"""Functional core of the fine step: words, chunks, keep decision, rejoin. Pure functions, no torch.

LLMLingua-2's decision (llmlingua 0.2.2, `PromptCompressor._PromptCompressor__compress`), reproduced here:
  * the text is tokenized and cut into chunks of at most 510 (+1) tokens, each ending at the last "."
    token that fits;
  * the model gives every token p(keep) (softmax, class 1); a word's probability is the mean over its
    tokens;
  * per chunk, each word's probability is repeated once per cl100k token of the word, and the threshold
    is `np.percentile(those, int(100 * (1 - rate) + 1))`;
  * a word is kept when its probability is > threshold (or == threshold == 1.0).
What a "word" is differs by mode (see `UnitMode`); the decision rule is the same.

Spans are (start, end) character offsets into the original text, so output is always made of original
characters: never a [UNK], never a broken character, never a space that was not in the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

Span = tuple[int, int]

# "word": whitespace-separated words, Japanese runs split into morphemes (the gateway's default: an
#   identifier, URL or number like 3.14 is kept or dropped whole).
# "wordpiece": llmlingua's own words (a first WordPiece token plus its "##" continuations), so punctuation
#   is its own word; used to prove equivalence with compress_prompt.
UnitMode = Literal["word", "wordpiece"]

# llmlingua's chunk_end_tokens default; "\n" never survives BERT tokenization but is kept for fidelity.
CHUNK_END_TOKENS = frozenset({".", "\n"})
# llmlingua: max_seq_len 512, minus [CLS] and [SEP]; a chunk may reach 511 tokens (the "." at st+510 is
# included) and then [SEP] is truncated away. We reproduce that exactly.
MAX_CHUNK_BODY = 510
MAX_SEQ_LEN = 512

_WS_WORD = re.compile(r"\S+")


@dataclass(frozen=True, slots=True)
class Chunk:
    start: int  # first token index (into the text's token list)
    end: int  # one past the last token index


def whitespace_units(text: str) -> list[Span]:
    return [m.span() for m in _WS_WORD.finditer(text)]


def wordpiece_units(tokens: Sequence[str], offsets: Sequence[Span]) -> list[Span]:
    """llmlingua's words: a token not starting with "##" opens a word, "##" tokens extend it."""
    units: list[Span] = []
    for tok, (s, e) in zip(tokens, offsets):
        if units and tok.startswith("##"):
            units[-1] = (units[-1][0], e)
        else:
            units.append((s, e))
    return units


def assign_tokens(units: Sequence[Span], token_offsets: Sequence[Span]) -> list[list[int]]:
    """For each unit, the indices of the tokens overlapping it (both lists sorted, non-overlapping).

    A token may overlap two units (a WordPiece piece crossing a Japanese morpheme boundary): it then
    counts for both, so every unit that has any model evidence gets it."""
    out: list[list[int]] = [[] for _ in units]
    t0 = 0
    n = len(token_offsets)
    for u, (us, ue) in enumerate(units):
        while t0 < n and token_offsets[t0][1] <= us:
            t0 += 1
        t = t0
        while t < n and token_offsets[t][0] < ue:
            if token_offsets[t][1] > us:
                out[u].append(t)
            t += 1
    return out


def unit_boundaries(n_tokens: int, unit_tokens: Sequence[Sequence[int]]) -> list[bool]:
    """is_end[i]: a chunk may end after token i without splitting a unit."""
    is_end = [True] * n_tokens
    for toks in unit_tokens:
        for t in toks[:-1]:
            is_end[t] = False
    return is_end


def chunk_tokens(
    tokens: Sequence[str],
    is_unit_end: Sequence[bool],
    max_body: int = MAX_CHUNK_BODY,
    end_tokens: frozenset[str] = CHUNK_END_TOKENS,
) -> list[Chunk]:
    """llmlingua's `__chunk_context` on token indices: take up to max_body+1 tokens, ending at the last
    end token in the window. Where the window has no end token llmlingua cuts mid-word; we cut at the
    last unit boundary instead (and mid-unit only for a unit longer than the window)."""
    n = len(tokens)
    chunks: list[Chunk] = []
    st = 0
    while st < n:
        if st + max_body > n - 1:
            chunks.append(Chunk(st, n))
            break
        ed = st + max_body
        cut = next((e for e in range(ed, st, -1) if tokens[e] in end_tokens and is_unit_end[e]), None)
        if cut is None:
            cut = next((e for e in range(ed, st, -1) if is_unit_end[e]), ed)
        chunks.append(Chunk(st, cut + 1))
        st = cut + 1
    return chunks


def model_input(ids: Sequence[int], cls_id: int, sep_id: int, max_len: int = MAX_SEQ_LEN) -> list[int]:
    """[CLS] chunk [SEP], truncated to max_len exactly as llmlingua's TokenClfDataset does."""
    return ([cls_id, *ids, sep_id])[:max_len]


def unit_probs(token_probs: np.ndarray, unit_tokens: Sequence[Sequence[int]]) -> np.ndarray:
    """Mean p(keep) of each unit's tokens (llmlingua's token_to_word="mean"); NaN for a unit with no
    token (e.g. only characters the tokenizer's normaliser removes)."""
    out = np.full(len(unit_tokens), np.nan, dtype=np.float32)
    for u, toks in enumerate(unit_tokens):
        if toks:
            # float32 sum in token order, then divide: the same arithmetic as llmlingua's
            # sum(p) / len(p) over numpy float32 scalars, so ties resolve identically.
            acc = np.float32(0.0)
            for t in toks:
                acc = acc + token_probs[t]
            out[u] = acc / len(toks)
    return out


def keep_decision(probs: Sequence[float], weights: Sequence[int], rate: float) -> list[bool]:
    """LLMLingua-2's per-chunk keep rule. weights: cl100k tokens per word (the rate is in LLM tokens)."""
    if len(probs) == 0:
        return []
    reduce_rate = max(0, 1 - rate)
    if reduce_rate <= 0:
        return [True] * len(probs)
    expanded = np.repeat(np.asarray(probs, dtype=np.float32), np.asarray(weights, dtype=np.int64))
    if expanded.size == 0:
        return [True] * len(probs)
    # llmlingua's expression; clamped because rate -> 0 would ask for the 101st percentile.
    threshold = np.percentile(expanded, min(100, int(100 * reduce_rate + 1)))
    return [bool(p > threshold or (threshold == 1.0 and p == threshold)) for p in probs]


def decide(
    chunks: Sequence[Chunk],
    unit_tokens: Sequence[Sequence[int]],
    probs: np.ndarray,
    weights: Sequence[int],
    rate: float,
) -> list[bool]:
    """Keep flags for all units: each unit is judged within the chunk holding its first token; a unit
    without tokens (NaN) is dropped (it is invisible to the model: zero-width or control characters)."""
    keep = [False] * len(unit_tokens)
    chunk_of_unit: list[list[int]] = [[] for _ in chunks]
    starts = [c.start for c in chunks]
    ci = 0
    for u, toks in enumerate(unit_tokens):
        if not toks:
            continue
        first = toks[0]
        while ci + 1 < len(chunks) and starts[ci + 1] <= first:
            ci += 1
        chunk_of_unit[ci].append(u)
    for members in chunk_of_unit:
        flags = keep_decision([probs[u] for u in members], [weights[u] for u in members], rate)
        for u, f in zip(members, flags):
            keep[u] = f
    return keep


def join_kept(text: str, units: Sequence[Span], keep: Sequence[bool]) -> str:
    """Kept units in order, separated by what the original had between them, reduced to one character:
    nothing (Japanese, or adjacent punctuation), a newline if the gap had one, else the gap's first
    whitespace character (a space, usually). So the
    output is a character subsequence of the input and no space appears inside unspaced text."""
    parts: list[str] = []
    prev_end: int | None = None
    for (s, e), k in zip(units, keep):
        if not k:
            continue
        if prev_end is not None:
            gap = text[prev_end:s]
            if "\n" in gap:
                parts.append("\n")
            else:
                # the gap's own first whitespace character (usually " "): never one the input lacked
                ws = next((ch for ch in gap if ch.isspace()), "")
                parts.append(ws)
        parts.append(text[s:e])
        prev_end = e
    return "".join(parts)


def unit_weights(texts: Sequence[str], count: Callable[[str], int]) -> list[int]:
    return [count(t) for t in texts]


def plan_batches(lengths: Sequence[int], max_batch_tokens: int, max_batch_size: int) -> list[list[int]]:
    """Group chunk indices into forward passes: sorted by length (short first, so short requests finish
    first and padding is small), each batch padded to its longest member, at most max_batch_tokens
    padded tokens and max_batch_size rows. A chunk longer than the budget gets a batch of its own."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        longest = lengths[i]  # ascending order: the newcomer is the longest
        if cur and ((len(cur) + 1) * longest > max_batch_tokens or len(cur) >= max_batch_size):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches
