"""The workload's shape (pydantic). Every key is checked; a typo or a bad bound names the key."""

from __future__ import annotations

import math
import random
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SLA_CLASSES: tuple[str, ...] = ("realtime", "standard", "batch")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LengthDist(_Strict):
    """Clipped lognormal: median, log-space sigma, hard bounds."""

    median: float = Field(gt=0)
    sigma: float = Field(default=0.5, ge=0, le=3)
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _bounds(self) -> "LengthDist":
        if self.min > self.max:
            raise ValueError("min must be <= max")
        return self

    def sample(self, rng: random.Random) -> int:
        v = self.median * math.exp(rng.gauss(0.0, self.sigma)) if self.sigma > 0 else self.median
        return int(min(self.max, max(self.min, round(v))))


class ArrivalSpec(_Strict):
    """Open loop: sessions (a RAG request, or a conversation's first turn) arrive at the swept rate.
    poisson: exponential gaps; gamma: Gamma gaps with this coefficient of variation (2 = bursty)."""

    process: Literal["poisson", "gamma"] = "poisson"
    cv: float = Field(default=2.0, gt=0, le=10)


class RagSpec(_Strict):
    # Entities (companies) in the corpus; each has a profile document and a people document.
    entities: int = Field(default=120, ge=4, le=5000)
    # Zipf exponent of entity popularity: a few entities (their documents) are asked about again and again.
    zipf_s: float = Field(default=1.1, ge=0, le=4)
    # Documents per prompt: the gold one(s) plus distractors that share the question's words.
    documents_min: int = Field(default=4, ge=2, le=30)
    documents_max: int = Field(default=7, ge=2, le=30)
    # Tokens of each document (filler around the facts).
    doc_tokens: LengthDist = LengthDist(median=380, sigma=0.4, min=120, max=1200)
    # Question kinds: a paraphrase shares few words with the gold document; a two-document question needs
    # a bridge document (name -> company) and the fact document (company -> answer).
    paraphrase_share: float = Field(default=0.3, ge=0, le=1)
    two_doc_share: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "RagSpec":
        if self.documents_min > self.documents_max:
            raise ValueError("documents_min must be <= documents_max")
        if self.paraphrase_share + self.two_doc_share > 1:
            raise ValueError("paraphrase_share + two_doc_share must be <= 1")
        return self


class ChatSpec(_Strict):
    turns_min: int = Field(default=2, ge=1, le=50)
    turns_max: int = Field(default=5, ge=1, le=50)
    # Seconds a user reads before the next turn (exponential with this mean); the next turn also waits for
    # the previous answer.
    think_time_s: float = Field(default=4.0, ge=0, le=600)
    user_turn_tokens: LengthDist = LengthDist(median=80, sigma=0.5, min=8, max=600)
    system_tokens: int = Field(default=400, ge=1, le=8000)

    @model_validator(mode="after")
    def _turns(self) -> "ChatSpec":
        if self.turns_min > self.turns_max:
            raise ValueError("turns_min must be <= turns_max")
        return self


class SlaMix(_Strict):
    realtime: float = Field(default=0.2, ge=0)
    standard: float = Field(default=0.5, ge=0)
    batch: float = Field(default=0.3, ge=0)

    @model_validator(mode="after")
    def _some(self) -> "SlaMix":
        if self.realtime + self.standard + self.batch <= 0:
            raise ValueError("at least one SLA share must be > 0")
        return self

    def weights(self) -> list[float]:
        return [self.realtime, self.standard, self.batch]


class KindMix(_Strict):
    rag: float = Field(default=0.7, ge=0)
    chat: float = Field(default=0.3, ge=0)

    @model_validator(mode="after")
    def _some(self) -> "KindMix":
        if self.rag + self.chat <= 0:
            raise ValueError("at least one of rag/chat must be > 0")
        return self


class WorkloadSpec(_Strict):
    """What the clients send. The rate and duration come from the experiment (swept), not from here."""

    model: str = "llama-3.1-8b"
    arrivals: ArrivalSpec = ArrivalSpec()
    mix: KindMix = KindMix()
    sla: SlaMix = SlaMix()
    # Per kind, overriding `sla` (e.g. interactive chat realtime, document QA standard/batch).
    rag_sla: SlaMix | None = None
    chat_sla: SlaMix | None = None
    rag: RagSpec = RagSpec()
    chat: ChatSpec = ChatSpec()
    # Output length of every request, fixed per request (sent as max_tokens with ignore_eos), so a request
    # has the same length at every site and in every arm.
    output_tokens: LengthDist = LengthDist(median=128, sigma=0.6, min=16, max=512)
    # open: sessions arrive at the swept rate. closed: the swept value is a number of users, each starting
    # its next session when the last one's final answer arrives (Little's law ties load to latency: an
    # option for comparison with closed-loop benchmarks, not the default).
    loop: Literal["open", "closed"] = "open"
