"""Workload spec and request planner. PURE: no I/O except reading a workload file; every random choice comes
from one `random.Random(seed)`, so the same spec and seed give the same requests, byte for byte, in every
scenario of a comparison.

Request shapes
* RAG: an instruction, several documents and a question. One document holds the gold fact; the gold answer
  string travels with the request so a later step can check whether it survived compression. Prompt
  lengths follow a clipped lognormal (RAG prompts have a long right tail). Some items are Japanese.
* Chat: multi-turn conversations. Turn k repeats the whole history of turns < k, so its prefix is stable and
  the gateway's conversation affinity (KV-cache reuse) has something to keep together.

Token lengths here are *targets* estimated from characters (English ~5 chars/token, Japanese ~0.85 for
cl100k on this text); the report counts tokens from the server's `usage`, never from these estimates.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

SLA_CLASSES: tuple[str, ...] = ("realtime", "standard", "batch")
PRIORITY_HEADER = "x-aigrid-priority"
CONVERSATION_HEADER = "x-aigrid-conversation"
# Every request carries its own id so a recording upstream can be joined back to it (answer retention).
REQUEST_ID_HEADER = "x-aigrid-loadtest-id"
# Safety bounds: a load test is a bounded experiment, never an unbounded flood.
MAX_REQUESTS = 100_000
MAX_DURATION_S = 3_600.0


class WorkloadError(ValueError):
    """A workload spec or file that cannot be used; the message names the file and the key."""


class _Strict(BaseModel):
    # A typo in a workload key must fail loudly, not silently fall back to a default.
    model_config = ConfigDict(extra="forbid")


class LengthDist(_Strict):
    """Clipped lognormal: median, log-space sigma, and hard bounds."""

    median: float = Field(gt=0)
    sigma: float = Field(default=0.6, ge=0, le=3)
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


class RagSpec(_Strict):
    # Prompt length in (estimated) tokens: realistic RAG spread, 500..6000 with a median around 2k.
    prompt_tokens: LengthDist = LengthDist(median=2000, sigma=0.6, min=500, max=6000)
    documents_min: int = Field(default=3, ge=1, le=50)
    documents_max: int = Field(default=8, ge=1, le=50)
    # Share of RAG items written in Japanese.
    japanese_share: float = Field(default=0.3, ge=0, le=1)
    # Optional JSONL of real items ({documents, question, answer, lang}), e.g. the compressor's eval set;
    # when given, items are drawn from it (seeded) instead of synthesised.
    items_file: str | None = None

    @model_validator(mode="after")
    def _docs(self) -> "RagSpec":
        if self.documents_min > self.documents_max:
            raise ValueError("documents_min must be <= documents_max")
        return self


class ChatSpec(_Strict):
    turns_min: int = Field(default=2, ge=1, le=50)
    turns_max: int = Field(default=6, ge=1, le=50)
    # Tokens of each new user turn and of each (synthetic) assistant answer kept in the history.
    user_turn_tokens: LengthDist = LengthDist(median=60, sigma=0.5, min=8, max=400)
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
    standard: float = Field(default=0.6, ge=0)
    batch: float = Field(default=0.2, ge=0)

    @model_validator(mode="after")
    def _some(self) -> "SlaMix":
        if self.realtime + self.standard + self.batch <= 0:
            raise ValueError("at least one SLA share must be > 0")
        return self

    def weights(self) -> list[float]:
        return [self.realtime, self.standard, self.batch]


class KindMix(_Strict):
    rag: float = Field(default=0.6, ge=0)
    chat: float = Field(default=0.4, ge=0)

    @model_validator(mode="after")
    def _some(self) -> "KindMix":
        if self.rag + self.chat <= 0:
            raise ValueError("at least one of rag/chat must be > 0")
        return self


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
    mix: KindMix = KindMix()
    rag: RagSpec = RagSpec()
    chat: ChatSpec = ChatSpec()
    sla: SlaMix = SlaMix()
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


# ---- text synthesis ------------------------------------------------------------------------------------
_EN_COMPANIES = ("Meridian Foods", "Osprey Networks", "Halden Rail", "Corvex Energy", "Lumen Bank", "Tarn Motors",
                 "Brightwater Labs", "Kestrel Air", "Norvale Steel", "Aurora Telecom")
_EN_FILLER = (
    "{c} reported steady demand across its regional markets during the period.",
    "Analysts noted that {c} kept its capital expenditure close to the previous year's level.",
    "The board of {c} met twice in the quarter and approved the annual maintenance plan.",
    "Customers of {c} cited delivery times as the main reason for switching suppliers.",
    "{c} opened a new service centre and hired {n} technicians for it.",
    "Energy costs at {c} fell by {p} percent after the plant upgrade was finished.",
    "A spokesperson for {c} said the company expects no change to its dividend policy.",
    "The network team at {c} migrated {n} sites to the new routing platform without downtime.",
    "{c} signed a supply agreement covering the next {k} years with two regional partners.",
    "Inventory at {c} rose slightly, which management attributed to seasonal effects.",
)
_EN_ATTRS = (("headquarters city", ("Oslo", "Nagoya", "Lyon", "Porto", "Tampere", "Sendai")),
             ("chief engineer", ("Kofi Okafor", "Mira Lindqvist", "Tomas Riedel", "Aiko Tanabe", "Priya Raman")),
             ("product code", None),
             ("founding year", None))
_JA_COMPANIES = ("北星食品", "青葉通信", "東和鉄道", "みなと電力", "さくら銀行", "富士見自動車", "明石研究所", "白鷺航空")
_JA_FILLER = (
    "{c}は今期、地域市場全体で安定した需要を報告した。",
    "アナリストは、{c}の設備投資が前年並みに抑えられたと指摘した。",
    "{c}の取締役会は四半期中に二度開かれ、年間保守計画を承認した。",
    "{c}は新しいサービス拠点を開設し、技術者を{n}人採用した。",
    "設備更新の完了後、{c}のエネルギー費用は{p}パーセント減少した。",
    "{c}の広報担当者は、配当方針に変更はないと述べた。",
    "{c}のネットワーク部門は、{n}拠点を新しい基盤へ停止なしで移行した。",
    "{c}は今後{k}年間の供給契約を地域の二社と締結した。",
)
_JA_ATTRS = (("本社所在地", ("札幌", "仙台", "金沢", "松山", "熊本", "函館")),
             ("技術責任者", ("山田太郎", "佐藤花子", "鈴木一郎", "高橋美咲", "田中健")),
             ("製品番号", None),
             ("創業年", None))
_EN_CHAT_OPENERS = (
    "I'm planning a migration of our inference cluster and want a second opinion on the steps.",
    "Can you help me write a short summary of our quarterly network incidents for management?",
    "We are comparing two GPU sites for a new service; walk me through what to measure first.",
    "Help me draft an email to a customer about a delayed delivery, polite but clear.",
    "I need to explain KV-cache reuse to a new colleague; let's build the explanation step by step.",
)
_EN_CHAT_FOLLOWUPS = (
    "Good. Now make it shorter and add one concrete example.",
    "What would change if the traffic doubled during the evening peak?",
    "Can you list the risks in order of likelihood?",
    "Rewrite the second point so a non-engineer understands it.",
    "Thanks. What should we monitor during the first week?",
)
_ASSISTANT_FILLER = ("Here is a structured answer. First, consider the load on each site and the latency budget. "
                     "Second, keep the conversation's history on the site that already holds its cache. ")
# Measured against cl100k on these generators' own text (English ~5.2 chars/token, Japanese ~0.85).
CHARS_PER_TOKEN = {"en": 5.0, "ja": 0.85}


def _value(rng: random.Random, attr: str, options: tuple[str, ...] | None, lang: str) -> str:
    if options:
        return rng.choice(options)
    if attr in ("product code", "製品番号"):
        return f"{rng.choice('ABCDEFGHJKLMNPRSTUVXZ')}{rng.choice('ABCDEFGHJKLMNPRSTUVXZ')}-{rng.randint(1000, 9999)}"
    year = str(rng.randint(1921, 2019))
    return year + ("年" if lang == "ja" else "")


def _filler(rng: random.Random, lang: str, company: str, chars: int) -> str:
    templates = _JA_FILLER if lang == "ja" else _EN_FILLER
    sep = "" if lang == "ja" else " "
    out: list[str] = []
    n = 0
    while n < chars:
        s = rng.choice(templates).format(c=company, n=rng.randint(3, 400), p=rng.randint(2, 30), k=rng.randint(2, 9))
        out.append(s)
        n += len(s) + len(sep)
    return sep.join(out)


def estimate_tokens(text: str, lang: str) -> int:
    return max(1, round(len(text) / CHARS_PER_TOKEN.get(lang, 4.0)))


@dataclass(frozen=True)
class RagItem:
    documents: tuple[str, ...]
    question: str
    answer: str
    lang: str


def synth_rag_item(rng: random.Random, spec: RagSpec) -> RagItem:
    lang = "ja" if rng.random() < spec.japanese_share else "en"
    target = spec.prompt_tokens.sample(rng)
    n_docs = rng.randint(spec.documents_min, spec.documents_max)
    per_doc_chars = max(40, int(target * CHARS_PER_TOKEN[lang] / n_docs))
    companies = _JA_COMPANIES if lang == "ja" else _EN_COMPANIES
    attr, options = rng.choice(_JA_ATTRS if lang == "ja" else _EN_ATTRS)
    gold_company = rng.choice(companies)
    answer = _value(rng, attr, options, lang)
    gold_doc = rng.randrange(n_docs)
    docs: list[str] = []
    for i in range(n_docs):
        company = gold_company if i == gold_doc else rng.choice(companies)
        body = _filler(rng, lang, company, per_doc_chars)
        if i == gold_doc:
            fact = f"{company}の{attr}は{answer}である。" if lang == "ja" else f"The {attr} of {company} is {answer}."
            sents = body.split("。") if lang == "ja" else body.split(". ")
            at = rng.randrange(len(sents) + 1)
            joiner = "。" if lang == "ja" else ". "
            body = joiner.join(sents[:at] + [fact.rstrip("。.")] + sents[at:])
        docs.append(body)
    question = f"{gold_company}の{attr}は何ですか？" if lang == "ja" else f"What is the {attr} of {gold_company}?"
    return RagItem(tuple(docs), question, answer, lang)


def rag_messages(item: RagItem) -> list[dict[str, str]]:
    if item.lang == "ja":
        intro, q = "以下の文書を参考に質問に答えてください。", "質問："
        parts = [f"【文書{i + 1}】\n{d}" for i, d in enumerate(item.documents)]
    else:
        intro, q = "Answer the question using the documents below.", "Question: "
        parts = [f"Document [{i + 1}]: {d}" for i, d in enumerate(item.documents)]
    content = intro + "\n\n" + "\n\n".join(parts) + "\n\n" + q + item.question
    return [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": content}]


def load_rag_items(path: str | Path) -> list[RagItem]:
    """JSONL items with documents/question/answer/lang (the compressor's eval-set shape)."""
    items: list[RagItem] = []
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise WorkloadError(f"{p}: cannot read rag.items_file: {exc.strerror or exc}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            d = json.loads(line)
            items.append(RagItem(tuple(d["documents"]), d["question"], str(d["answer"]), d.get("lang", "en")))
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkloadError(f"{p}: line {n}: not a RAG item ({exc})") from None
    if not items:
        raise WorkloadError(f"{p}: no RAG items")
    return items


# ---- planning ------------------------------------------------------------------------------------------
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
                opener = content.choice(_EN_CHAT_OPENERS) if lang == "en" else "推論基盤の移行計画について相談させてください。"
                # A unique tag makes each conversation's prefix (and so its affinity key) distinct.
                conv.messages = [
                    {"role": "system", "content": "You are a helpful assistant."},
                    {"role": "user", "content": f"[{conv.cid}] {opener} " + _filler(content, lang, content.choice(
                        _JA_COMPANIES if lang == "ja" else _EN_COMPANIES), int(spec.chat.user_turn_tokens.sample(content) * CHARS_PER_TOKEN[lang]))},
                ]
                open_convs.append(conv)
            else:
                conv = content.choice(open_convs)
                reply_chars = int(spec.chat.assistant_turn_tokens.sample(content) * CHARS_PER_TOKEN[conv.lang])
                reply = (_ASSISTANT_FILLER * (1 + reply_chars // len(_ASSISTANT_FILLER)))[:reply_chars]
                follow = content.choice(_EN_CHAT_FOLLOWUPS) if conv.lang == "en" else "ありがとうございます。もう少し短くまとめてください。"
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
