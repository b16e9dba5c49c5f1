"""The load tester's synthetic text: RAG items (template documents around one gold fact, English or
Japanese) and chat fillers, and RAG items read from a JSONL file. Pure: every random choice comes from the
`random.Random` handed in.

Token lengths here are *targets* estimated from characters (English ~5 chars/token, Japanese ~0.85 for
cl100k on this text); the load test's report counts tokens from the server's `usage`, never from these.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

from extproc.tools.workload.rag import FILLER_EN
from extproc.tools.workload.spec import SyntheticRagSpec


class WorkloadError(ValueError):
    """A workload spec or file that cannot be used; the message names the file and the key."""


EN_COMPANIES = ("Meridian Foods", "Osprey Networks", "Halden Rail", "Corvex Energy", "Lumen Bank", "Tarn Motors",
                "Brightwater Labs", "Kestrel Air", "Norvale Steel", "Aurora Telecom")
EN_FILLER = FILLER_EN
EN_ATTRS = (("headquarters city", ("Oslo", "Nagoya", "Lyon", "Porto", "Tampere", "Sendai")),
            ("chief engineer", ("Kofi Okafor", "Mira Lindqvist", "Tomas Riedel", "Aiko Tanabe", "Priya Raman")),
            ("product code", None),
            ("founding year", None))
JA_COMPANIES = ("北星食品", "青葉通信", "東和鉄道", "みなと電力", "さくら銀行", "富士見自動車", "明石研究所", "白鷺航空")
JA_FILLER = (
    "{c}は今期、地域市場全体で安定した需要を報告した。",
    "アナリストは、{c}の設備投資が前年並みに抑えられたと指摘した。",
    "{c}の取締役会は四半期中に二度開かれ、年間保守計画を承認した。",
    "{c}は新しいサービス拠点を開設し、技術者を{n}人採用した。",
    "設備更新の完了後、{c}のエネルギー費用は{p}パーセント減少した。",
    "{c}の広報担当者は、配当方針に変更はないと述べた。",
    "{c}のネットワーク部門は、{n}拠点を新しい基盤へ停止なしで移行した。",
    "{c}は今後{k}年間の供給契約を地域の二社と締結した。",
)
JA_ATTRS = (("本社所在地", ("札幌", "仙台", "金沢", "松山", "熊本", "函館")),
            ("技術責任者", ("山田太郎", "佐藤花子", "鈴木一郎", "高橋美咲", "田中健")),
            ("製品番号", None),
            ("創業年", None))
EN_CHAT_OPENERS = (
    "I'm planning a migration of our inference cluster and want a second opinion on the steps.",
    "Can you help me write a short summary of our quarterly network incidents for management?",
    "We are comparing two GPU sites for a new service; walk me through what to measure first.",
    "Help me draft an email to a customer about a delayed delivery, polite but clear.",
    "I need to explain KV-cache reuse to a new colleague; let's build the explanation step by step.",
)
EN_CHAT_FOLLOWUPS = (
    "Good. Now make it shorter and add one concrete example.",
    "What would change if the traffic doubled during the evening peak?",
    "Can you list the risks in order of likelihood?",
    "Rewrite the second point so a non-engineer understands it.",
    "Thanks. What should we monitor during the first week?",
)
ASSISTANT_FILLER = ("Here is a structured answer. First, consider the load on each site and the latency budget. "
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


def filler(rng: random.Random, lang: str, company: str, chars: int) -> str:
    templates = JA_FILLER if lang == "ja" else EN_FILLER
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
class TextRagItem:
    documents: tuple[str, ...]
    question: str
    answer: str
    lang: str


def synth_rag_item(rng: random.Random, spec: SyntheticRagSpec) -> TextRagItem:
    lang = "ja" if rng.random() < spec.japanese_share else "en"
    target = spec.prompt_tokens.sample(rng)
    n_docs = rng.randint(spec.documents_min, spec.documents_max)
    per_doc_chars = max(40, int(target * CHARS_PER_TOKEN[lang] / n_docs))
    companies = JA_COMPANIES if lang == "ja" else EN_COMPANIES
    attr, options = rng.choice(JA_ATTRS if lang == "ja" else EN_ATTRS)
    gold_company = rng.choice(companies)
    answer = _value(rng, attr, options, lang)
    gold_doc = rng.randrange(n_docs)
    docs: list[str] = []
    for i in range(n_docs):
        company = gold_company if i == gold_doc else rng.choice(companies)
        body = filler(rng, lang, company, per_doc_chars)
        if i == gold_doc:
            fact = f"{company}の{attr}は{answer}である。" if lang == "ja" else f"The {attr} of {company} is {answer}."
            sents = body.split("。") if lang == "ja" else body.split(". ")
            at = rng.randrange(len(sents) + 1)
            joiner = "。" if lang == "ja" else ". "
            body = joiner.join(sents[:at] + [fact.rstrip("。.")] + sents[at:])
        docs.append(body)
    question = f"{gold_company}の{attr}は何ですか？" if lang == "ja" else f"What is the {attr} of {gold_company}?"
    return TextRagItem(tuple(docs), question, answer, lang)


def rag_messages(item: TextRagItem) -> list[dict[str, str]]:
    if item.lang == "ja":
        intro, q = "以下の文書を参考に質問に答えてください。", "質問："
        parts = [f"【文書{i + 1}】\n{d}" for i, d in enumerate(item.documents)]
    else:
        intro, q = "Answer the question using the documents below.", "Question: "
        parts = [f"Document [{i + 1}]: {d}" for i, d in enumerate(item.documents)]
    content = intro + "\n\n" + "\n\n".join(parts) + "\n\n" + q + item.question
    return [{"role": "system", "content": "You are a careful assistant."}, {"role": "user", "content": content}]


def load_rag_items(path: str | Path) -> list[TextRagItem]:
    """JSONL items with documents/question/answer/lang (the compressor's eval-set shape)."""
    items: list[TextRagItem] = []
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
            items.append(TextRagItem(tuple(d["documents"]), d["question"], str(d["answer"]), d.get("lang", "en")))
        except (ValueError, KeyError, TypeError) as exc:
            raise WorkloadError(f"{p}: line {n}: not a RAG item ({exc})") from None
    if not items:
        raise WorkloadError(f"{p}: no RAG items")
    return items
