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


class _DocumentCount(_Strict):
    """Documents per RAG prompt: the gold one(s) plus distractors."""

    documents_min: int = Field(default=4, ge=1, le=50)
    documents_max: int = Field(default=7, ge=1, le=50)

    @model_validator(mode="after")
    def _documents(self) -> "_DocumentCount":
        if self.documents_min > self.documents_max:
            raise ValueError("documents_min must be <= documents_max")
        return self


class RagSpec(_DocumentCount):
    """The twin's hard corpus (`rag.py`): entities, Zipf popularity, question kinds."""

    # Entities (companies) in the corpus; each has a profile document and a people document.
    entities: int = Field(default=120, ge=4, le=5000)
    # Zipf exponent of entity popularity: a few entities (their documents) are asked about again and again.
    zipf_s: float = Field(default=1.1, ge=0, le=4)
    # Tokens of each document (filler around the facts).
    doc_tokens: LengthDist = LengthDist(median=380, sigma=0.4, min=120, max=1200)
    # Question kinds: a paraphrase shares few words with the gold document; a two-document question needs
    # a bridge document (name -> company) and the fact document (company -> answer).
    paraphrase_share: float = Field(default=0.3, ge=0, le=1)
    two_doc_share: float = Field(default=0.2, ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "RagSpec":
        if self.paraphrase_share + self.two_doc_share > 1:
            raise ValueError("paraphrase_share + two_doc_share must be <= 1")
        return self


class SyntheticRagSpec(_DocumentCount):
    """The load tester's RAG prompts (`synthetic.py`): template documents of a drawn total length, one gold
    fact, some items in Japanese; or items drawn from a JSONL file."""

    documents_min: int = Field(default=3, ge=1, le=50)
    documents_max: int = Field(default=8, ge=1, le=50)
    # Prompt length in (estimated) tokens: realistic RAG spread, 500..6000 with a median around 2k.
    prompt_tokens: LengthDist = LengthDist(median=2000, sigma=0.6, min=500, max=6000)
    # Share of RAG items written in Japanese.
    japanese_share: float = Field(default=0.3, ge=0, le=1)
    # Optional JSONL of real items ({documents, question, answer, lang}), e.g. the compressor's eval set;
    # when given, items are drawn from it (seeded) instead of synthesised.
    items_file: str | None = None


class ChatSpec(_Strict):
    """Multi-turn conversations. The twin's planner (`generate.py`) reads turns, think time, user-turn and
    system tokens (assistant turns are the previous answers); the load tester's (`loadtest/workloads.py`)
    reads turns, user and assistant turn tokens, open conversations and the header switch."""

    turns_min: int = Field(default=2, ge=1, le=50)
    turns_max: int = Field(default=5, ge=1, le=50)
    # Seconds a user reads before the next turn (exponential with this mean); the next turn also waits for
    # the previous answer.
    think_time_s: float = Field(default=4.0, ge=0, le=600)
    user_turn_tokens: LengthDist = LengthDist(median=80, sigma=0.5, min=8, max=600)
    system_tokens: int = Field(default=400, ge=1, le=8000)
    # Tokens of each (synthetic) assistant answer kept in the history.
    assistant_turn_tokens: LengthDist = LengthDist(median=120, sigma=0.5, min=8, max=600)
    # Conversations open at once; a chat arrival continues one of them or opens a new one.
    open_conversations: int = Field(default=8, ge=1, le=10_000)
    # Send x-aigrid-conversation; off by default because real clients rarely do, and the gateway keys a
    # conversation on its prefix hash anyway (the history repeats it).
    conversation_header: bool = False

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
