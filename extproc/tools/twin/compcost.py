"""What the gateway's coarse compression costs, as resources with queues (issue 17, item 4). PURE.

This is the cost and timing of the coarse step only; which documents it keeps is the compression model's
business (`gateway_adapter.CompressionModel`), so that the two can change apart.

The gateway runs the coarse step of one RAG prompt as (`compression/core/pipeline.py`, `coarse.py`):

* a ranking cache keyed by (question, documents): a prompt ranked before costs a lookup, and its first
  ranking is the one used from then on (`cache_max_rankings` entries, LRU);
* otherwise BM25 on the ranker's lexical thread (`ThreadPoolExecutor(max_workers=1)`: one at a time,
  first come first served, a queue);
* then, when the configured ranker wants the embedding model ("auto" for English, "hybrid",
  "embedding") and the model is there, the dense pass on the embedding thread (one worker) — but only if
  that thread is free: busy, the request takes the BM25 ranking at once ("bm25(busy)"); a dense pass that
  would end after the request's own deadline gives "bm25(timeout)" at the deadline, while the thread
  still finishes it (and caches its sentence vectors). A document whose sentence vectors were computed
  before costs a lookup (the vector cache), so a warm pass encodes only the question;
* around the ranking, on the gRPC loop: segmentation, selection, rebuild and encoding of the body.

Every cost is a measured figure of this machine (`gateway_adapter.measure_compressor`, run by `aigrid
demo`): BM25 tokens/s, the whole BM25 pipeline's tokens/s, and the dense pass's seconds per prompt with
cold and with warm sentence vectors. The fine step (the LLMLingua-2 worker) is not modelled: the twin's
arms run coarse-only, as the demo's gateway does without a model.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class CoarseCosts:
    """Measured costs (CPU seconds of one core) of the gateway's coarse step on this machine."""

    pipeline_tokens_per_s: float  # the whole coarse-only pass with BM25 (segment, rank, select, rebuild)
    lexical_tokens_per_s: float  # BM25 ranking alone (its expansion and links), on the lexical thread
    dense_cold_s: float | None = None  # one dense pass, no sentence vector cached (None: no model)
    dense_warm_s: float | None = None  # one dense pass, every document's vectors cached (the question only)

    def __post_init__(self) -> None:
        if not (self.pipeline_tokens_per_s > 0 and self.lexical_tokens_per_s > 0):
            raise ValueError("coarse costs: tokens/s must be > 0")
        if self.pipeline_tokens_per_s > self.lexical_tokens_per_s:
            # The pipeline includes the ranking: it cannot be faster than the ranking alone. A measurement
            # that says so is noise; the loop's share is then taken as zero.
            object.__setattr__(self, "pipeline_tokens_per_s", self.lexical_tokens_per_s)


@dataclass(frozen=True, slots=True)
class Charge:
    """One request's coarse step: latency added before it leaves the gateway, CPU spent, the ranking used."""

    latency_s: float
    cpu_s: float
    method: str  # "cached", "bm25", "hybrid", "bm25(busy)", "bm25(timeout)"
    queued_s: float = 0.0  # waiting for the lexical thread


@dataclass
class CoarseStage:
    """The gateway's coarse step as resources on the twin's clock: the lexical thread (FIFO queue), the
    embedding thread (busy: BM25 fallback), the ranking cache and the sentence-vector cache."""

    costs: CoarseCosts
    wants_dense: bool  # the configured ranker would use the embedding model for this workload's language
    rank_cache_size: int = 1024
    vector_cache_documents: int = 4096
    lexical_free_at: float = 0.0
    dense_free_at: float = 0.0
    _ranked: OrderedDict = field(default_factory=OrderedDict)
    _vectors: OrderedDict = field(default_factory=OrderedDict)
    methods: dict[str, int] = field(default_factory=dict)

    @property
    def dense(self) -> bool:
        return self.wants_dense and self.costs.dense_cold_s is not None

    def charge(self, now: float, prompt_key: object, doc_keys: tuple[object, ...], cost_tokens: int,
               deadline_s: float) -> Charge:
        """The coarse step of one prompt that starts at `now` and must answer within `deadline_s`."""
        c = self.costs
        loop_s = cost_tokens * max(0.0, 1.0 / c.pipeline_tokens_per_s - 1.0 / c.lexical_tokens_per_s)
        if self._hit(self._ranked, prompt_key, self.rank_cache_size):
            return self._count(Charge(loop_s, loop_s, "cached"))
        lex_s = cost_tokens / c.lexical_tokens_per_s
        start = max(now, self.lexical_free_at)
        self.lexical_free_at = start + lex_s
        t = self.lexical_free_at
        cpu = loop_s + lex_s
        method = "bm25"
        if self.dense:
            if self.dense_free_at > t:
                method = "bm25(busy)"
            else:
                warm = all(self._hit(self._vectors, k, self.vector_cache_documents, touch_only=True) for k in doc_keys)
                d = (c.dense_warm_s if warm else c.dense_cold_s) or 0.0
                self.dense_free_at = t + d
                cpu += d
                for k in doc_keys:
                    self._hit(self._vectors, k, self.vector_cache_documents)
                end = now + deadline_s
                if t + d > end:
                    method, t = "bm25(timeout)", max(t, end)
                else:
                    method, t = "hybrid", t + d
        # The first ranking is the one kept (the rewriter's ranking cache), whichever method made it.
        self._hit(self._ranked, prompt_key, self.rank_cache_size)
        return self._count(Charge(t - now + loop_s, cpu, method, start - now))

    def _count(self, ch: Charge) -> Charge:
        self.methods[ch.method] = self.methods.get(ch.method, 0) + 1
        return ch

    @staticmethod
    def _hit(lru: OrderedDict, key: object, size: int, touch_only: bool = False) -> bool:
        """LRU membership; inserts the key unless `touch_only`."""
        if key in lru:
            lru.move_to_end(key)
            return True
        if not touch_only and size > 0:
            lru[key] = None
            if len(lru) > size:
                lru.popitem(last=False)
        return False

    def fallback_share(self) -> float | None:
        """Of the rankings that wanted the embedding model (not cached), the share that got BM25 instead."""
        wanted = sum(v for k, v in self.methods.items() if k in ("hybrid", "bm25(busy)", "bm25(timeout)"))
        fell = self.methods.get("bm25(busy)", 0) + self.methods.get("bm25(timeout)", 0)
        return fell / wanted if wanted else None
