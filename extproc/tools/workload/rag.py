"""A RAG corpus whose items are hard for a compressor, and whose documents repeat across requests.

* Entities (companies), each with a profile document (headquarters city, founding year, product code)
  and a people document (chief engineer). Entity popularity is Zipf: popular documents come back again
  and again (so prefix caching and compression interact).
* Three question kinds per entity:
    direct      "What is the headquarters city of Kestrel Dynamics?"   (shares the gold document's words)
    paraphrase  "Where is Kestrel Dynamics based?"                     (shares only the name)
    two_doc     "In which city is the company whose chief engineer is Mira Okafor headquartered?"
                (needs the people document as a bridge and the profile document for the answer)
* Distractors: other entities' documents, and hard notes written for the item that repeat the
  question's words (the entity's name, the attribute) around another company's value.

The corpus depends on the spec only (not on the run's seed), so every seed and every arm asks about the
same documents; the run's seed picks which items are asked, when and by whom.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass

from extproc.tools.tokens import (
    count_text,  # the simulated sites' own count (cl100k, offline)
)
from extproc.tools.workload.spec import RagSpec

_PREFIXES = ("Kestrel", "Meridian", "Osprey", "Halden", "Corvex", "Lumen", "Tarn", "Brightwater", "Norvale",
             "Aurora", "Cobalt", "Juniper", "Solace", "Vantor", "Quill", "Ember", "Harbor", "Sable", "Tidewell",
             "Granite", "Alder", "Borealis", "Cinder", "Driftwood", "Falcon", "Glacier", "Ironwood", "Larch",
             "Mistral", "Northgate", "Oakridge", "Pinecrest", "Redfern", "Silverline", "Thornbury", "Umber",
             "Westmere", "Yarrow", "Zephyr", "Ashgrove")
_SUFFIXES = ("Dynamics", "Networks", "Foods", "Rail", "Energy", "Bank", "Motors", "Labs", "Air", "Steel",
             "Telecom", "Logistics", "Robotics", "Pharma", "Textiles", "Shipping", "Media", "Optics")
_CITIES = ("Oslo", "Nagoya", "Lyon", "Porto", "Tampere", "Sendai", "Graz", "Leeds", "Bilbao", "Turin",
           "Gdansk", "Aarhus", "Utrecht", "Brno", "Malmo", "Ghent", "Cork", "Basel", "Split", "Riga")
_FIRST = ("Kofi", "Mira", "Tomas", "Aiko", "Priya", "Lars", "Nadia", "Omar", "Ines", "Yuki", "Pavel",
          "Sofia", "Dmitri", "Leila", "Hugo", "Ana", "Felix", "Rosa", "Jonas", "Amara")
_LAST = ("Okafor", "Lindqvist", "Riedel", "Tanabe", "Raman", "Moreau", "Kowalski", "Haddad", "Silva",
         "Novak", "Berger", "Costa", "Ivanova", "Nakamura", "Fischer", "Duarte", "Keller", "Sato")
FILLER_EN = (
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
# attribute -> (direct phrase, paraphrased question template)
_ATTRS: dict[str, tuple[str, str]] = {
    "city": ("headquarters city", "Where is {e} based?"),
    "year": ("founding year", "When was {e} established?"),
    "code": ("product code", "Which code does {e} ship its main product under?"),
    "engineer": ("chief engineer", "Who leads engineering at {e}?"),
}
KINDS = ("direct", "paraphrase", "two_doc")


@dataclass(frozen=True, slots=True)
class Document:
    key: str  # stable id: the prefix cache and the twin's bookkeeping key on it
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class RagItem:
    key: str
    kind: str  # direct | paraphrase | two_doc
    entity: int
    question: str
    answer: str
    docs: tuple[Document, ...]  # in prompt order
    gold: tuple[int, ...]  # indices into docs the answer needs (all of them)
    # Per gold document, the text that must survive in it: the answer in the fact document, the
    # engineer's name in a two-document question's bridge document.
    needles: tuple[str, ...] = ()

    @property
    def doc_tokens(self) -> int:
        return sum(d.tokens for d in self.docs)


@dataclass(frozen=True, slots=True)
class Corpus:
    items: tuple[RagItem, ...]  # entity e's items are items[3e : 3e + 3], in KINDS order
    entities: int


def _count(text: str) -> int:
    return count_text(text)


def _filler(rng: random.Random, company: str, tokens: int) -> list[str]:
    out: list[str] = []
    n = 0
    while n < tokens:
        s = rng.choice(FILLER_EN).format(c=company, n=rng.randint(3, 400), p=rng.randint(2, 30), k=rng.randint(2, 9))
        out.append(s)
        n += len(s) // 5 + 1
    return out


def _insert(rng: random.Random, sentences: list[str], facts: list[str]) -> str:
    for f in facts:
        sentences.insert(rng.randrange(len(sentences) + 1), f)
    return " ".join(sentences)


@functools.lru_cache(maxsize=4)
def build_corpus(spec: RagSpec) -> Corpus:
    """The corpus and its items for a spec (cached: pure in the spec)."""
    rng = random.Random(f"corpus:{spec.model_dump_json()}")
    names = [f"{p} {s}" for p in _PREFIXES for s in _SUFFIXES]
    rng.shuffle(names)
    people = [f"{f} {l}" for f in _FIRST for l in _LAST]
    rng.shuffle(people)
    n = min(spec.entities, len(names), len(people))
    facts = []
    for e in range(n):
        facts.append({
            "city": rng.choice(_CITIES),
            "year": str(rng.randint(1921, 2019)),
            "code": f"{rng.choice('ABCDEFGHJKLMNPRSTUVXZ')}{rng.choice('ABCDEFGHJKLMNPRSTUVXZ')}-{rng.randint(1000, 9999)}",
            "engineer": people[e],
        })
    profile: list[Document] = []
    staff: list[Document] = []
    for e in range(n):
        c, f = names[e], facts[e]
        t = _insert(rng, _filler(rng, c, spec.doc_tokens.sample(rng)), [
            f"The headquarters city of {c} is {f['city']}.",
            f"The founding year of {c} is {f['year']}.",
            f"The product code of {c} is {f['code']}.",
        ])
        profile.append(Document(f"profile:{e}", t, _count(t)))
        t = _insert(rng, _filler(rng, c, spec.doc_tokens.sample(rng)), [
            f"The chief engineer of {c} is {f['engineer']}.",
        ])
        staff.append(Document(f"people:{e}", t, _count(t)))

    items: list[RagItem] = []
    for e in range(n):
        c, f = names[e], facts[e]
        for kind in KINDS:
            irng = random.Random(f"item:{e}:{kind}:{spec.model_dump_json()}")
            if kind == "two_doc":
                attr = "city"
                question = f"In which city is the company whose chief engineer is {f['engineer']} headquartered?"
                gold_docs = [staff[e], profile[e]]
            else:
                attr = irng.choice(tuple(_ATTRS))
                phrase, para = _ATTRS[attr]
                question = f"What is the {phrase} of {c}?" if kind == "direct" else para.format(e=c)
                gold_docs = [staff[e] if attr == "engineer" else profile[e]]
            phrase = _ATTRS[attr][0]
            answer = f[attr]
            n_docs = irng.randint(spec.documents_min, spec.documents_max)
            others = [o for o in range(n) if o != e]
            distractors: list[Document] = []
            n_hard = max(1, (n_docs - len(gold_docs)) // 2)
            for h in range(n_hard):
                # A hard note: the question's words (this entity, this attribute) around another value.
                o = irng.choice(others)
                oc, of = names[o], facts[o]
                body = _filler(irng, c, spec.doc_tokens.sample(irng) // 2)
                t = _insert(irng, body + _filler(irng, oc, spec.doc_tokens.sample(irng) // 2), [
                    f"Analysts compared {c} with {oc} on every measure.",
                    f"The {phrase} of {oc}, a rival of {c}, is {of[attr]}.",
                ])
                distractors.append(Document(f"note:{e}:{kind}:{h}", t, _count(t)))
            while len(distractors) + len(gold_docs) < n_docs:
                # Popular documents of other entities (Zipf-weighted: the same ones recur in many prompts).
                o = irng.choices(others, weights=[1.0 / (k + 1) ** max(spec.zipf_s, 1e-9) for k in others])[0]
                d = irng.choice((profile[o], staff[o]))
                if d not in distractors:
                    distractors.append(d)
            docs = [*gold_docs, *distractors]
            irng.shuffle(docs)
            gold = tuple(sorted(docs.index(g) for g in gold_docs))
            needle = {id(staff[e]): f["engineer"] if kind == "two_doc" else answer, id(profile[e]): answer}
            needles = tuple(needle[id(docs[g])] for g in gold)
            items.append(RagItem(f"{e}:{kind}", kind, e, question, answer, tuple(docs), gold, needles))
    return Corpus(tuple(items), n)


def zipf_weights(n: int, s: float) -> list[float]:
    return [1.0 / (k + 1) ** s for k in range(n)]


SYSTEM_PROMPT = "You are a careful assistant. Answer from the documents only; say 'unknown' if they do not say."
INSTRUCTION = "Answer the question using the documents below."


def rag_messages(item: RagItem, kept: tuple[int, ...] | None = None) -> list[dict[str, str]]:
    """The chat messages of an item (all documents, or the kept ones)."""
    idx = range(len(item.docs)) if kept is None else kept
    parts = [f"Document [{i + 1}]: {item.docs[i].text}" for i in idx]
    content = INSTRUCTION + "\n\n" + "\n\n".join(parts) + "\n\nQuestion: " + item.question
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": content}]
