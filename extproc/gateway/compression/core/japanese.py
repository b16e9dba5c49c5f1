"""Word units for the "word" mode: whitespace words, with Japanese runs split into morphemes.

LLMLingua-2 (BERT WordPiece) treats a run of kana as one word and each kanji as its own word, so on
Japanese it keeps or drops whole phrases or single characters. We split Japanese with fugashi + unidic-lite
(offline) so morphemes are kept or dropped, and rejoin with no spaces. Scripts written without spaces that
we cannot segment safely (Chinese without kana, Thai, Lao, Khmer, Myanmar, Tibetan) are reported as
unsupported: the caller leaves that text unchanged.

Everything here is pure except the lazily-created, per-thread fugashi Tagger.
"""

from __future__ import annotations

import threading
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

from extproc.gateway.compression.core.keep import Span, whitespace_units

Script = Literal["spaced", "japanese", "unsupported"]

# A whitespace word with at least this many characters of an unspaced script we cannot segment is a
# sentence, not a word: dropping or keeping it whole is not compression, so the text is left alone.
UNSPACED_RUN_LIMIT = 8


def is_kana(ch: str) -> bool:
    o = ord(ch)
    return 0x3040 <= o <= 0x30FF or 0x31F0 <= o <= 0x31FF or 0xFF66 <= o <= 0xFF9D


def is_han(ch: str) -> bool:
    o = ord(ch)
    return (
        0x4E00 <= o <= 0x9FFF
        or 0x3400 <= o <= 0x4DBF
        or 0x20000 <= o <= 0x2FA1F
        or 0xF900 <= o <= 0xFAFF
        or o == 0x3005  # 々 (iteration mark)
    )


def is_cjk_punct_or_fullwidth(ch: str) -> bool:
    o = ord(ch)
    return 0x3000 <= o <= 0x303F or 0xFF00 <= o <= 0xFFEF


def is_other_unspaced(ch: str) -> bool:
    """Thai, Lao, Tibetan, Myanmar, Khmer: written without spaces between words."""
    o = ord(ch)
    return 0x0E00 <= o <= 0x0FFF or 0x1000 <= o <= 0x109F or 0x1780 <= o <= 0x17FF


def is_japanese_char(ch: str) -> bool:
    return is_kana(ch) or is_han(ch) or is_cjk_punct_or_fullwidth(ch)


def classify(text: str) -> Script:
    """'japanese' if the text has kana (then Han runs are Japanese too); 'unsupported' if it has a long
    run of an unspaced script we cannot segment; else 'spaced'."""
    if any(is_kana(ch) for ch in text):
        for s, e in whitespace_units(text):
            if _unspaced_run(text[s:e], is_other_unspaced) >= UNSPACED_RUN_LIMIT:
                return "unsupported"
        return "japanese"
    for s, e in whitespace_units(text):
        word = text[s:e]
        if _unspaced_run(word, lambda c: is_han(c) or is_other_unspaced(c)) >= UNSPACED_RUN_LIMIT:
            return "unsupported"
    return "spaced"


def _unspaced_run(word: str, pred: Callable[[str], bool]) -> int:
    best = cur = 0
    for ch in word:
        cur = cur + 1 if pred(ch) else 0
        best = max(best, cur)
    return best


def is_extender(ch: str) -> bool:
    """Characters that belong to the previous character's grapheme: combining marks, ZWJ, variation
    selectors, emoji skin-tone modifiers. A unit must never start with one."""
    o = ord(ch)
    return (
        unicodedata.category(ch) in ("Mn", "Mc", "Me")
        or o == 0x200D
        or 0xFE00 <= o <= 0xFE0F
        or 0xE0100 <= o <= 0xE01EF
        or 0x1F3FB <= o <= 0x1F3FF
        or 0xE0020 <= o <= 0xE007F  # emoji tag sequences
    )


def merge_graphemes(text: str, spans: Sequence[Span]) -> list[Span]:
    """Merge a span into the previous one when the boundary would split a grapheme (the span starts with
    an extender, or the previous one ends with ZWJ) so that dropping a unit never breaks a character."""
    out: list[Span] = []
    for s, e in spans:
        if out and out[-1][1] == s and (is_extender(text[s]) or text[s - 1] == "\u200d"):
            out[-1] = (out[-1][0], e)
        else:
            out.append((s, e))
    return out


def morpheme_spans(text: str, tagger: Callable[[str], Sequence[object]]) -> list[Span] | None:
    """Character spans of the morphemes of `text` (no whitespace in them), or None if the analyser's
    surfaces cannot be aligned with the text (then the caller does not compress it)."""
    spans: list[Span] = []
    pos = 0
    for node in tagger(text):
        surface: str = node.surface  # type: ignore[attr-defined]
        if not surface:
            continue
        start = text.find(surface, pos)
        # MeCab only skips whitespace between morphemes; anything else means misalignment.
        if start < 0 or text[pos:start].strip():
            return None
        spans.append((start, start + len(surface)))
        pos = start + len(surface)
    if text[pos:].strip():
        return None
    return spans


_local = threading.local()


def default_tagger() -> Callable[[str], Sequence[object]]:
    """One fugashi Tagger per thread (MeCab taggers are not shared across threads)."""
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        import fugashi  # unidic-lite provides the dictionary, offline

        tagger = fugashi.Tagger()
        _local.tagger = tagger
    return tagger


def word_units(
    text: str, tagger: Callable[[], Callable[[str], Sequence[object]]] = default_tagger
) -> list[Span] | None:
    """Units for the "word" mode, or None when the text cannot be compressed safely.

    Whitespace words stay whole (identifiers, URLs, numbers, English words); a whitespace word that
    contains Japanese characters (in a text with kana) is split into morphemes."""
    script = classify(text)
    if script == "unsupported":
        return None
    units = whitespace_units(text)
    if script == "spaced":
        return units
    tag = tagger()
    out: list[Span] = []
    for s, e in units:
        word = text[s:e]
        if not any(is_japanese_char(ch) for ch in word):
            out.append((s, e))
            continue
        sub = morpheme_spans(word, tag)
        if sub is None:
            return None
        out.extend(merge_graphemes(text, [(s + a, s + b) for a, b in sub]))
    return out
