"""Content-hash keyed, bounded caches that make compression deterministic. Pure data structures.

Why: real vLLM caches prompt prefixes. A shared document (a popular page many requests retrieve, a long
system context) is a prefix-cache hit only if it reaches the site as the same bytes every time. The fine
step can give different bytes for the same text: int8 activations are quantised per batch, so the company
of a text in a batch shifts scores near the keep threshold; a saturated or late worker skips a request.
The coarse step's ranking can differ too (the embedding finishes or times out). So the first result for a
given content is kept and reused:

* `DocumentCache`: sha256(piece text) + the model rate (on a 0.05 grid) -> the compressed piece. Only
  successful compressions are stored.
* `RankingCache`: sha256(question, documents) -> the coarse ranking.

Both are LRU with a bound on entries and on stored characters, so memory stays bounded whatever the
traffic. Keys are digests, not the texts (a 1 MB document costs 32 bytes of key).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Sequence
from typing import Generic, TypeVar

V = TypeVar("V")

# Model rates are rounded to this grid for the key (and for the model call), so a shared document gets the
# same bytes in requests whose rates differ by a little.
RATE_STEP = 0.05


def quantize_rate(rate: float, step: float = RATE_STEP) -> float:
    """`rate` on a grid of `step`, within (0, 1]; rounding to nearest (0.33 -> 0.35, 0.32 -> 0.3)."""
    q = round(round(rate / step) * step, 6)
    return min(1.0, max(step, q))


def digest(*parts: str) -> str:
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))  # length-prefixed: ("ab", "c") != ("a", "bc")
        h.update(b)
    return h.hexdigest()


class BoundedLRU(Generic[V]):
    """LRU map with at most `max_entries` entries and `max_chars` summed value sizes (as given by put)."""

    def __init__(self, max_entries: int, max_chars: int) -> None:
        self.max_entries = max_entries
        self.max_chars = max_chars
        self._d: OrderedDict[str, tuple[V, int]] = OrderedDict()
        self.chars = 0
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._d)

    def get(self, key: str) -> V | None:
        got = self._d.get(key)
        if got is None:
            self.misses += 1
            return None
        self._d.move_to_end(key)
        self.hits += 1
        return got[0]

    def put(self, key: str, value: V, size: int) -> None:
        if size > self.max_chars:
            return  # larger than the whole cache: not worth evicting everything for
        old = self._d.pop(key, None)
        if old is not None:
            self.chars -= old[1]
        self._d[key] = (value, size)
        self.chars += size
        while len(self._d) > self.max_entries or self.chars > self.max_chars:
            _, (_, sz) = self._d.popitem(last=False)
            self.chars -= sz


class DocumentCache:
    """Compressed pieces by content: digest(text) at a model rate -> the text sent upstream."""

    def __init__(self, max_entries: int = 4096, max_chars: int = 32 * 1024 * 1024) -> None:
        self._lru: BoundedLRU[str] = BoundedLRU(max_entries, max_chars)
        # Digests of texts compressed at some rate (for the break-even rule: their cost is a lookup).
        self._seen: BoundedLRU[bool] = BoundedLRU(max_entries, max_entries)

    def known(self, text: str) -> bool:
        return self._seen.get(digest("seen", text)) is not None

    @staticmethod
    def key(text: str, model_rate: float) -> str:
        return digest("piece", f"{model_rate:.2f}", text)

    def get(self, text: str, model_rate: float) -> str | None:
        return self._lru.get(self.key(text, model_rate))

    def put(self, text: str, model_rate: float, compressed: str) -> None:
        self._lru.put(self.key(text, model_rate), compressed, len(compressed))
        self._seen.put(digest("seen", text), True, 1)

    @property
    def stats(self) -> tuple[int, int, int]:
        """(entries, hits, misses)."""
        return len(self._lru), self._lru.hits, self._lru.misses


class RankingCache(Generic[V]):
    """Coarse rankings by the question and documents they were computed for."""

    def __init__(self, max_entries: int = 1024) -> None:
        self._lru: BoundedLRU[V] = BoundedLRU(max_entries, max_entries)

    @staticmethod
    def key(question: str, docs: Sequence[str]) -> str:
        return digest("ranking", question, *docs)

    def get(self, question: str, docs: Sequence[str]) -> V | None:
        return self._lru.get(self.key(question, docs))

    def put(self, question: str, docs: Sequence[str], ranking: V) -> None:
        self._lru.put(self.key(question, docs), ranking, 1)


class TurnMemory:
    """What each rewritten message was sent as, by the digest of what the client wrote.

    A conversation's next request repeats its earlier turns as the client wrote them; the site cached
    them as we sent them (compressed). Sending the remembered bytes keeps that prefix a cache hit; a
    message never rewritten (or forgotten) goes as written, which is what was sent then, too."""

    def __init__(self, max_entries: int = 4096, max_chars: int = 32 * 1024 * 1024) -> None:
        self._lru: BoundedLRU[str] = BoundedLRU(max_entries, max_chars)

    def get(self, original: str) -> str | None:
        return self._lru.get(digest("turn", original))

    def put(self, original: str, sent: str) -> None:
        self._lru.put(digest("turn", original), sent, len(sent))

    def __len__(self) -> int:
        return len(self._lru)
