"""Seeded request streams: open loop (Poisson or Gamma sessions) or closed loop. Pure.

A session is one RAG request or one conversation (several turns). Turn k of a conversation is planned at
the session's start plus the think times before it, and is sent at the later of that time and the moment
turn k-1's answer arrived (the user reads the answer, then types): the driver (the twin, or the live
check) enforces the second condition. The swept rate is in *requests* per second: sessions start at
rate / (mean requests per session).

Each request carries its prompt as segments (stable key, tokens): the same document at the same place
has the same key in every request, so a prefix cache, or a compressor dropping it, sees the same thing.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from itertools import accumulate
from operator import attrgetter

from extproc.tools.tokens import count_text
from extproc.tools.workload.rag import (
    INSTRUCTION,
    SYSTEM_PROMPT,
    Corpus,
    build_corpus,
    zipf_weights,
)
from extproc.tools.workload.spec import SLA_CLASSES, WorkloadSpec

# Chat framing as the simulated sites count it (OpenAI's rule for cl100k chat models): 3 per message + 3.
PER_MESSAGE = 3
REPLY_PRIMING = 3
# "Document [i]: " and the blank lines around it.
DOC_LABEL_TOKENS = 6
QUESTION_LABEL_TOKENS = 3


@dataclass(slots=True)
class Request:
    rid: int
    at: float  # planned send time (s)
    kind: str  # rag | chat
    sla: str
    output_tokens: int
    prompt_tokens: int  # as the client sends it
    segments: tuple[tuple[str, int], ...]
    item: int = -1  # index into the corpus' items (rag)
    conv: int = -1  # conversation id (chat)
    turn: int = 0  # 1-based turn (chat)
    turns: int = 1
    user: int = -1  # closed loop: the user who sends it

    @property
    def conversation_key(self) -> str:
        """What the gateway keys affinity on: the prefix up to the first user message (request/openai.py),
        i.e. the whole prompt of a RAG item, the opening of a conversation."""
        return f"p:rag:{self.item}" if self.kind == "rag" else f"p:chat:{self.conv}"


@functools.lru_cache(maxsize=1)
def _tokens_sys() -> tuple[int, int]:
    return count_text(SYSTEM_PROMPT), count_text(INSTRUCTION)


_SEGMENTS: dict[tuple[int, int, tuple[int, ...] | None], tuple[tuple[str, int], ...]] = {}


def rag_segments(corpus: Corpus, item: int, kept: tuple[int, ...] | None = None) -> tuple[tuple[str, int], ...]:
    """The prompt's segments (cached by the corpus' identity: a corpus is immutable and kept alive by
    build_corpus' cache; hashing it whole per call would cost more than building the segments)."""
    key = (id(corpus), item, kept)
    hit = _SEGMENTS.get(key)
    if hit is None:
        hit = _SEGMENTS[key] = _rag_segments(corpus, item, kept)
    return hit


def _rag_segments(corpus: Corpus, item: int, kept: tuple[int, ...] | None) -> tuple[tuple[str, int], ...]:
    it = corpus.items[item]
    sys_t, instr_t = _tokens_sys()
    segs: list[tuple[str, int]] = [("rag:sys", sys_t + PER_MESSAGE), ("rag:instr", instr_t + PER_MESSAGE)]
    for i in range(len(it.docs)) if kept is None else kept:
        d = it.docs[i]
        segs.append((f"{d.key}@{i}", d.tokens + DOC_LABEL_TOKENS))
    segs.append((f"q:{it.key}", max(1, len(it.question) // 4) + QUESTION_LABEL_TOKENS + REPLY_PRIMING))
    return tuple(segs)


def mean_requests_per_session(spec: WorkloadSpec) -> float:
    w = spec.mix.rag + spec.mix.chat
    turns = (spec.chat.turns_min + spec.chat.turns_max) / 2
    return (spec.mix.rag + spec.mix.chat * turns) / w


def _gap(rng: random.Random, rate: float, process: str, cv: float) -> float:
    if process == "poisson":
        return rng.expovariate(rate)
    k = 1.0 / (cv * cv)  # Gamma with shape k and mean 1/rate has CV 1/sqrt(k)
    return rng.gammavariate(k, 1.0 / (rate * k))


class SessionSource:
    """Sessions in order: each a list of requests (one for RAG, the turns for chat), times relative to the
    session's start. Separate random streams for kinds, content and think times, so a change of rate
    changes only the arrival times, never what is asked."""

    def __init__(self, spec: WorkloadSpec, seed: int) -> None:
        self.spec = spec
        self.corpus = build_corpus(spec.rag)
        self._kinds = random.Random(f"{seed}:kinds")
        self._content = random.Random(f"{seed}:content")
        self._think = random.Random(f"{seed}:think")
        n = self.corpus.entities
        # Cumulative weights, computed once: `choices` accumulates `weights` on every call (O(entities))
        # and then draws exactly as with these (same sums, same bisect), so the stream is unchanged.
        self._ent_cw = list(accumulate(zipf_weights(n, spec.rag.zipf_s)))
        self._ents = list(range(n))
        self._kind_cw = list(accumulate((spec.mix.rag, spec.mix.chat)))
        self._sla_cw = {k: list(accumulate(((spec.rag_sla if k == "rag" else spec.chat_sla) or spec.sla).weights()))
                        for k in ("rag", "chat")}
        self._conv = 0
        self._rid = 0

    def next_session(self) -> list[Request]:
        s = self.spec
        kind = self._kinds.choices(("rag", "chat"), cum_weights=self._kind_cw)[0]
        sla = self._kinds.choices(SLA_CLASSES, cum_weights=self._sla_cw[kind])[0]
        c = self._content
        if kind == "rag":
            e = c.choices(self._ents, cum_weights=self._ent_cw)[0]
            u = c.random()
            qk = 2 if u < s.rag.two_doc_share else (1 if u < s.rag.two_doc_share + s.rag.paraphrase_share else 0)
            item = 3 * e + qk
            segs = rag_segments(self.corpus, item)
            out = s.output_tokens.sample(c)
            self._rid += 1
            return [Request(self._rid, 0.0, "rag", sla, out, sum(t for _, t in segs), segs, item=item)]
        self._conv += 1
        conv = self._conv
        turns = c.randint(s.chat.turns_min, s.chat.turns_max)
        segs: list[tuple[str, int]] = [("chat:sys", s.chat.system_tokens + PER_MESSAGE)]
        reqs: list[Request] = []
        t = 0.0
        for k in range(1, turns + 1):
            segs.append((f"c{conv}:u{k}", s.chat.user_turn_tokens.sample(c) + PER_MESSAGE))
            out = s.output_tokens.sample(c)
            self._rid += 1
            prompt = tuple(segs) + (("prime", REPLY_PRIMING),)
            reqs.append(Request(self._rid, t, "chat", sla, out, sum(x for _, x in prompt), prompt,
                                conv=conv, turn=k, turns=turns))
            # The assistant's answer joins the history of the next turn.
            segs.append((f"c{conv}:a{k}", out + PER_MESSAGE))
            t += self._think.expovariate(1.0 / s.chat.think_time_s) if s.chat.think_time_s > 0 else 0.0
        return reqs


def generate_open_loop(spec: WorkloadSpec, rate: float, duration_s: float, seed: int) -> list[Request]:
    """Every request of the sessions starting in [0, duration_s), sorted by planned send time."""
    src = SessionSource(spec, seed)
    arr = random.Random(f"{seed}:arrivals")
    srate = rate / mean_requests_per_session(spec)
    out: list[Request] = []
    t = 0.0
    while True:
        t += _gap(arr, srate, spec.arrivals.process, spec.arrivals.cv)
        if t >= duration_s:
            break
        for r in src.next_session():
            r.at += t
            out.append(r)
    out.sort(key=attrgetter("at", "rid"))  # (at, rid) tuples, compared as before
    return out
