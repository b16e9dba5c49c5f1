"""The load test's spec (YAML, validated) and its request planner. PURE: no I/O except reading a workload
file; every random choice comes from one `random.Random(seed)`, so the same spec and seed give the same
requests, byte for byte, in every scenario of a comparison.

The workload's parts (length distributions, SLA and kind mixes, chat, synthetic RAG) are the one workload
model in `extproc.tools.workload.spec`; the text comes from `extproc.tools.workload.synthetic`.

Request shapes
* RAG: an instruction, several documents and a question. One document holds the gold fact; the gold answer
  string travels with the request so a later step can check whether it survived compression. Prompt
  lengths follow a clipped lognormal (RAG prompts have a long right tail). Some items are Japanese.
* Chat: multi-turn conversations. Turn k repeats the whole history of turns < k, so its prefix is stable and
  the gateway's conversation affinity (KV-cache reuse) has something to keep together.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from extproc.tools.workload.spec import (
    SLA_CLASSES,
    ChatSpec,
    KindMix,
    LengthDist,
    SlaMix,
    SyntheticRagSpec,
)
from extproc.tools.workload.synthetic import (
    ASSISTANT_FILLER,
    CHARS_PER_TOKEN,
    EN_CHAT_FOLLOWUPS,
    EN_CHAT_OPENERS,
    EN_COMPANIES,
    JA_COMPANIES,
    WorkloadError,
    estimate_tokens,
    filler,
    load_rag_items,
    rag_messages,
    synth_rag_item,
)
from extproc.wire.contract import CONVERSATION_HEADER, PRIORITY_HEADER

# Every request carries its own id so a recording upstream can be joined back to it (answer retention).
REQUEST_ID_HEADER = "x-aigrid-loadtest-id"
# Safety bounds: a load test is a bounded experiment, never an unbounded flood.
MAX_REQUESTS = 100_000
MAX_DURATION_S = 3_600.0

__all__ = ["CONVERSATION_HEADER", "MAX_DURATION_S", "MAX_REQUESTS", "PRIORITY_HEADER", "REQUEST_ID_HEADER",
           "SLA_CLASSES", "LoadSpec", "PlannedRequest", "WorkloadError", "load_workload_file", "parse_spec",
           "plan", "request_seed"]


class _Strict(BaseModel):
    # A typo in a workload key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class LoadSpec(_Strict):
    """One load test. Open loop (`rate`, Poisson arrivals) or closed loop (`concurrency`), bounded by a
    request count, a duration, or both (whichever comes first)."""

    seed: int = 1
    model: str = "llama-3.1-8b"
    path: Literal["/v1/chat/completions"] = "/v1/chat/completions"
    stream: bool = True
    rate: float | None = Field(default=None, gt=0, le=10_000)
    concurrency: int | None = Field(default=None, ge=1, le=10_000)
    requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    duration_s: float | None = Field(default=None, gt=0, le=MAX_DURATION_S)
    # The load tester's own defaults for the shared workload parts.
    mix: KindMix = KindMix(rag=0.6, chat=0.4)
    rag: SyntheticRagSpec = SyntheticRagSpec()
    chat: ChatSpec = ChatSpec(turns_max=6, user_turn_tokens=LengthDist(median=60, sigma=0.5, min=8, max=400))
    sla: SlaMix = SlaMix(realtime=0.2, standard=0.6, batch=0.2)
    max_tokens: LengthDist = LengthDist(median=128, sigma=0.7, min=16, max=512)
    # Every request carries a `seed` (request_seed), so a server draws the same answer length for it
    # everywhere. fixed_output_length: also send vLLM's `ignore_eos`, so every answer is exactly
    # max_tokens long (no natural end at all).
    fixed_output_length: bool = False
    # Per-request deadline; also how long in-flight requests may drain after the duration ends.
    request_timeout_s: float = Field(default=120.0, gt=0, le=3_600)
    # Bound on requests in flight in open loop: past it, arrivals are counted as dropped, not queued
    # without limit in the client (which would hide the server's overload behind the client's).
    max_in_flight: int = Field(default=2048, ge=1, le=100_000)
    # Seconds between samples of the sites' and the gateway's /metrics.
    sample_interval_s: float = Field(default=0.5, ge=0.05, le=60)

    @model_validator(mode="after")
    def _modes(self) -> "LoadSpec":
        if (self.rate is None) == (self.concurrency is None):
            raise ValueError("give exactly one of rate (open loop) or concurrency (closed loop)")
        if self.requests is None and self.duration_s is None:
            raise ValueError("give requests, duration_s, or both")
        return self

    @property
    def open_loop(self) -> bool:
        return self.rate is not None


def _fmt_loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def validation_message(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid workload"]
    for e in exc.errors():
        lines.append(f"  {where}: {_fmt_loc(tuple(e['loc']))}: {e['msg']}")
    return "\n".join(lines)


def parse_spec(data: Any, where: str = "workload") -> LoadSpec:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorkloadError(f"{where}: the workload must be a mapping of keys, got {type(data).__name__}")
    try:
        return LoadSpec.model_validate(data)
    except ValidationError as exc:
        raise WorkloadError(validation_message(exc, where)) from None


def load_workload_file(path: str | Path, **overrides: Any) -> LoadSpec:
    """Read a YAML workload; `overrides` (CLI flags) replace top-level keys. Errors name file and key."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkloadError(f"{p}: cannot read workload file: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise WorkloadError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise WorkloadError(f"{p}: the workload must be a mapping of keys, got {type(data).__name__}")
    merged = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    # A CLI rate replaces a file's concurrency (and vice versa): the two are exclusive.
    if overrides.get("rate") is not None:
        merged.pop("concurrency", None)
    if overrides.get("concurrency") is not None:
        merged.pop("rate", None)
    return parse_spec(merged, str(p))

@dataclass(frozen=True)
class PlannedRequest:
    index: int
    kind: Literal["rag", "chat"]
    sla: str
    # Open loop: send offset in seconds from the start; closed loop: None (sent when a worker is free).
    at_s: float | None
    body: dict[str, Any]
    headers: dict[str, str]
    est_prompt_tokens: int
    lang: str
    gold: str | None = None
    conversation: str | None = None
    turn: int = 0

    @property
    def request_id(self) -> str:
        return self.headers[REQUEST_ID_HEADER]


@dataclass
class _Conversation:
    cid: str
    lang: str
    turns: int
    sla: str
    messages: list[dict[str, str]] = field(default_factory=list)
    done: int = 0


def request_seed(workload_seed: int, index: int) -> int:
    """The ``seed`` request ``index`` of a workload sends: a stable function of the two, so the n-th
    request has the same seed at every site, in every arm and at every rate. An OpenAI-compatible
    server samples with it (vLLM; the simulator draws the answer's natural length from it), so the
    same request gets the same output length wherever it is routed. 31 bits: any server's int fits."""
    h = hashlib.blake2s(f"{workload_seed}:{index}".encode(), digest_size=4).digest()
    return int.from_bytes(h, "little") & 0x7FFF_FFFF


def plan(spec: LoadSpec) -> Iterator[PlannedRequest]:
    """Requests in send order. Infinite only when bounded by duration alone; the runner stops it.

    The random streams are split (arrivals, kinds, content) so that changing, say, the rate does not change
    which prompts are sent: the same seed gives the same sequence of bodies at any rate.
    """
    arrivals = random.Random(f"{spec.seed}:arrivals")
    kinds = random.Random(f"{spec.seed}:kinds")
    content = random.Random(f"{spec.seed}:content")
    items = load_rag_items(spec.rag.items_file) if spec.rag.items_file else None
    open_convs: list[_Conversation] = []
    conv_seq = 0
    t = 0.0
    limit = spec.requests if spec.requests is not None else MAX_REQUESTS
    for i in range(limit):
        at: float | None = None
        if spec.rate is not None:
            t += arrivals.expovariate(spec.rate)
            if spec.duration_s is not None and t > spec.duration_s:
                return
            at = t
        kind = kinds.choices(("rag", "chat"), (spec.mix.rag, spec.mix.chat))[0]
        sla = kinds.choices(SLA_CLASSES, spec.sla.weights())[0]
        max_tokens = spec.max_tokens.sample(content)
        gold = None
        conv_id = None
        turn = 0
        if kind == "rag":
            item = content.choice(items) if items else synth_rag_item(content, spec.rag)
            messages = rag_messages(item)
            lang, gold = item.lang, item.answer
        else:
            # Continue an open conversation, or open a new one while fewer than the target are open.
            if len(open_convs) < spec.chat.open_conversations and (not open_convs or content.random() < 0.5):
                conv_seq += 1
                lang = "ja" if content.random() < spec.rag.japanese_share else "en"
                conv = _Conversation(f"c{spec.seed}-{conv_seq}", lang, content.randint(spec.chat.turns_min, spec.chat.turns_max), sla)
                opener = content.choice(EN_CHAT_OPENERS) if lang == "en" else "推論基盤の移行計画について相談させてください。"
                # A unique tag makes each conversation's prefix (and so its affinity key) distinct.
                conv.messages = [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"[{conv.cid}] {opener} " + filler(content, lang, content.choice(
                        JA_COMPANIES if lang == "ja" else EN_COMPANIES), int(spec.chat.user_turn_tokens.sample(content) * CHARS_PER_TOKEN[lang]))},
                ]
                open_convs.append(conv)
            else:
                conv = content.choice(open_convs)
                reply_chars = int(spec.chat.assistant_turn_tokens.sample(content) * CHARS_PER_TOKEN[conv.lang])
                reply = (ASSISTANT_FILLER * (1 + reply_chars // len(ASSISTANT_FILLER)))[:reply_chars]
                follow = content.choice(EN_CHAT_FOLLOWUPS) if conv.lang == "en" else "ありがとうございます。もう少し短くまとめてください。"
                conv.messages = [*conv.messages, {"role": "assistant", "content": reply}, {"role": "user", "content": follow}]
            conv.done += 1
            # A conversation keeps the SLA class it opened with (one user, one application).
            sla = conv.sla
            turn = conv.done
            conv_id = conv.cid
            lang = conv.lang
            messages = list(conv.messages)
            if conv.done >= conv.turns:
                open_convs.remove(conv)
        body: dict[str, Any] = {
            "model": spec.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
            "seed": request_seed(spec.seed, i),
        }
        if spec.fixed_output_length:
            body["ignore_eos"] = True
        if spec.stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        headers = {PRIORITY_HEADER: sla, REQUEST_ID_HEADER: f"lt{spec.seed}-{i}"}
        if conv_id and spec.chat.conversation_header:
            headers[CONVERSATION_HEADER] = conv_id
        est = sum(estimate_tokens(m["content"], lang) for m in messages)
        yield PlannedRequest(i, kind, sla, at, body, headers, est, lang, gold, conv_id, turn)
