"""Segmentation of an OpenAI request into compressible and protected text, and the rebuild. Pure.

What may be compressed: long retrieved documents, long user context, tool outputs. What never is: system
and developer prompts, assistant turns, the question at the end of the last user message, short messages,
fenced code, JSON, markdown tables and headings, document headers, markup tags, the tokenizer's special
tokens, and anything the client wraps in ``<aigrid-protect>…</aigrid-protect>``. Those blocks are cut out
of the text the model sees. Inside compressible text, numbers, URLs, e-mail addresses, identifiers and
mid-sentence capitalised names stay in the text the model sees but are always kept ("atoms").

Protect marker: the request path gives the rewriter no request headers, and an extra per-message key
would break strict OpenAI-schema servers. So the marker is in the text itself. It is never removed: the
same bytes go upstream whether or not compression runs, and removing it only when we compress would make
the two paths differ.

The text of a body is addressed by "slots": the JSON path of a string (``messages[3].content`` or
``messages[3].content[1].text`` or ``prompt``). Each slot is cut into pieces whose concatenation is the
original string exactly, so a rebuild that replaces nothing gives back the same text. A rebuild copies
only the containers on the path to a changed string: every other field is the same object, and
``orjson.dumps`` writes it back with the same meaning.

Words: a "unit" is a run of letters/digits/underscore, one CJK character, or one other visible character
(punctuation, an emoji with its modifiers). Compressed text is always a subsequence of the original units
(``restore`` checks it and gives up otherwise).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from extproc.gateway.request.openai import estimate_tokens

# ---- units ------------------------------------------------------------------------------------------------
# Scripts written without spaces between words (Japanese, Chinese): one character per unit, so dropping
# a unit never breaks a character and never needs a space.
_CJK = (
    "\u2e80-\u2fff\u3000-\u303f\u3040-\u309f\u30a0-\u30ff\u3100-\u312f\u3190-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\ufe30-\ufe4f\uff00-\uffef"
)
# Marks that belong to the character before them: combining accents, variation selectors, emoji skin
# tones and tags, kana voicing marks; a zero-width joiner glues the next character on (emoji sequences).
_EXT = (
    "[\u0300-\u036f\u0483-\u0489\u0591-\u05bd\u0610-\u061a\u064b-\u065f\u0e31\u0e34-\u0e3a\u0e47-\u0e4e"
    "\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\u3099\u309a\ufe00-\ufe0f\ufe20-\ufe2f"
    "\U0001f3fb-\U0001f3ff\U000e0000-\U000e007f]"
)
_UNIT = re.compile(
    rf"(?:[\U0001F1E6-\U0001F1FF]{{2}}|[{_CJK}]|[^\W{_CJK}]+|[^\s])(?:{_EXT}|\u200d[^\s])*"
)
_CJK_RE = re.compile(f"[{_CJK}]")


def units(text: str) -> list[str]:
    return _UNIT.findall(text)


def unit_spans(text: str) -> list[tuple[int, int]]:
    return [m.span() for m in _UNIT.finditer(text)]


def is_subsequence(small: Sequence[str], big: Sequence[str]) -> bool:
    it = iter(big)
    return all(any(u == v for v in it) for u in small)


# ---- what is protected ------------------------------------------------------------------------------------
PROTECT_OPEN = "<aigrid-protect>"
PROTECT_CLOSE = "</aigrid-protect>"

# Blocks cut out of the model's input (kept byte-identical). Unterminated fences/markers run to the end:
# a half-protected block is worse than an uncompressed tail.
_BLOCKS = re.compile(
    r"<aigrid-protect>.*?(?:</aigrid-protect>|\Z)"
    r"|^[ \t]*(?P<fence>```|~~~)[^\n]*\n.*?(?:^[ \t]*(?P=fence)[ \t]*$|\Z)"
    r"|^[ \t]*\|[^\n]*\|[ \t]*$"  # markdown table rows
    r"|^[ \t]*#{1,6}[ \t][^\n]*$"  # markdown headings
    r"|<\|[^|\n]{1,40}\|>"  # special tokens: <|endoftext|>, <|im_start|>
    r"|\[(?:CLS|SEP|PAD|MASK|UNK|INST|/INST)\]|</?s>|<unk>|<pad>|<mask>"
    r"|</?[A-Za-z][\w:.-]{0,40}(?:\s[^<>\n]{0,200})?/?>",  # markup tags: models and LLMLingua mangle '<'
    re.DOTALL | re.MULTILINE,
)
# Atoms: stay in the model's input, always kept.
# ASCII word boundaries: "\b" sees none between a kanji and a Latin letter ("脆弱性CVE-2026-1190を").
_A0 = r"(?<![A-Za-z0-9_])"
_A1 = r"(?![A-Za-z0-9_])"
_ATOMS = re.compile(
    r"(?:https?|ftp)://[^\s<>\"')\]]+|www\.[^\s<>\"')\]]+"
    r"|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    # numbers: dates, versions, money, ranges, percentages, with a CJK counter after them (2024年, 3件)
    r"|[-+$€£¥]?\d[\d,._:/-]*(?:[%％]|[年月日時分秒円個件人台回週歳号階本枚名])?"
    # identifiers: letters with digits or inner punctuation (INC-4821, user_id, v1.2, gpt-4o, os.path)
    rf"|{_A0}[A-Za-z_][A-Za-z0-9_]*(?:[-_./:#][A-Za-z0-9_]+)+{_A1}"
    rf"|{_A0}[A-Za-z]*\d[A-Za-z0-9_]*{_A1}|{_A0}[A-Za-z0-9]*_[A-Za-z0-9_]*{_A1}"
    rf"|{_A0}[a-z]+[A-Z][A-Za-z0-9_]*{_A1}"  # camelCase
    rf"|{_A0}[A-Z]{{2,}}[A-Z0-9]*s?{_A1}"  # acronyms
    # a capitalised word that does not start a sentence: most likely a name
    r"|(?<=[^\s.!?:;\"'\n]\s)[A-Z][a-z]+(?:[ ][A-Z][a-z]+)*",
)

# Document markers at a line start: "Document [3]:", "[2]", "Passage 1.", "## Source 4", "【文書2】",
# "<document id=1>".
_DOC_MARKER = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:"
    r"\[?(?:Document|Doc|Passage|Source|Context|Snippet|Result|Chunk|Reference|Article|Excerpt|"
    r"文書|資料|参考資料|参考|出典|ドキュメント|記事|抜粋)[ \t]*(?:#|No\.?|№)?[ \t]*\[?[0-9０-９]+\]?"
    r"[ \t]*[:：.)\]】]?"
    r"|\[[0-9]{1,4}\]"
    r"|【[^】\n]{1,30}】"
    r"|<(?:document|doc|passage|context|source)\b[^>\n]*>"
    r")[ \t]*\n?",
    re.MULTILINE | re.IGNORECASE,
)
# Where the question begins after the documents.
_QUESTION_LINE = re.compile(
    r"^[ \t]*(?:#{1,6}[ \t]*)?(?:\*\*)?(?:Question|Questions|Query|Q|Task|Instruction|User question|"
    r"質問|問題|問い|設問)(?:\*\*)?[ \t]*[:：]",
    re.MULTILINE | re.IGNORECASE,
)
_SENTENCE_END = re.compile(r"[.!?。！？](?=\s|$)|[。！？]")

_PROTECTED_ROLES = frozenset({"system", "developer", "assistant"})
_CONTEXT_ROLES = frozenset({"user", "tool", "function"})


@dataclass(frozen=True, slots=True)
class SegmentOptions:
    # A message (or text part) shorter than this is never compressed: it gains little and is most likely
    # an instruction.
    min_segment_tokens: int = 48
    # A compressible piece with fewer units than this between protected blocks stays as it is.
    min_piece_units: int = 8
    # Prefix caching: every message before the last assistant message was sent to a site before (the
    # conversation so far) and sits in its prefix cache; rewriting it would turn those hits into a full
    # prefill. So only the newest turn (what follows the last assistant message: the new user message, tool
    # results) is compressible, unless this is set.
    rewrite_earlier_turns: bool = False


# ---- data -------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Piece:
    text: str
    compress: bool
    # Index into Segmentation.documents of the document this piece belongs to.
    doc: int | None = None
    # Char ranges in `text` that must be kept (numbers, URLs, identifiers, names).
    atoms: tuple[tuple[int, int], ...] = ()
    # A document's marker ("Document [3]: "): dropped with its document, never merged with other text.
    header: bool = False
    # Char ranges kept or dropped whole (Japanese morphemes): a kept span never splits one.
    groups: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Slot:
    path: tuple[str | int, ...]
    pieces: tuple[Piece, ...]

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)


@dataclass(frozen=True, slots=True)
class Document:
    """A retrieved document: a region of a message between markers, or a whole context message."""

    slot: int
    pieces: tuple[int, ...]
    # Whole message: dropping it would change the message structure (tool_call pairing, role
    # alternation), so the coarse step shortens it to a stub instead.
    whole_message: bool
    text: str
    tokens: int


@dataclass(frozen=True, slots=True)
class Segmentation:
    slots: tuple[Slot, ...]
    documents: tuple[Document, ...]
    question: str
    total_tokens: int
    compressible_tokens: int
    # Slots of user/tool text in earlier turns (before the last assistant message), protected here; the
    # pipeline sends each as it was sent the first time (see CompressionPipeline.replay).
    earlier_slots: tuple[int, ...] = ()

    @property
    def rag(self) -> bool:
        """Several documents and a question: the coarse step applies."""
        return len(self.documents) >= 2 and bool(self.question.strip())

    def compressible(self) -> list[tuple[int, int]]:
        return [(si, pi) for si, s in enumerate(self.slots) for pi, p in enumerate(s.pieces) if p.compress]


# ---- splitting one string ---------------------------------------------------------------------------------
def _looks_json(text: str) -> bool:
    s = text.strip()
    if not s or s[0] not in "{[" or s[-1] not in "}]":
        return False
    try:
        orjson.loads(s)
    except (orjson.JSONDecodeError, ValueError, RecursionError):
        return False
    return True


def atoms_of(text: str) -> tuple[tuple[int, int], ...]:
    """Char spans of the atoms of a text. Not computed by `segment` (it costs ~0.5 s per MB): the
    pipeline asks only for the pieces it sends to the model."""
    return tuple(m.span() for m in _ATOMS.finditer(text))


def with_atoms(piece: "Piece") -> "Piece":
    if not piece.compress or piece.atoms:
        return piece
    return Piece(piece.text, piece.compress, piece.doc, atoms_of(piece.text), piece.header)


def _region_pieces(text: str, doc: int | None, opts: SegmentOptions) -> list[Piece]:
    """A compressible region → pieces: protected blocks (and JSON paragraphs) cut out, the rest
    compressible if long enough."""
    cuts: list[tuple[int, int]] = [m.span() for m in _BLOCKS.finditer(text)]
    # JSON paragraphs (tool outputs, pasted payloads) are protected whole.
    for m in re.finditer(r"(?:^|\n\n)([ \t]*[\[{].*?)(?=\n\n|\Z)", text, re.DOTALL):
        if _looks_json(m.group(1)):
            cuts.append(m.span(1))
    cuts.sort()
    pieces: list[Piece] = []
    pos = 0

    def add_free(a: int, b: int) -> None:
        if a >= b:
            return
        chunk = text[a:b]
        if len(units(chunk)) >= opts.min_piece_units:
            pieces.append(Piece(chunk, True, doc))
        else:
            pieces.append(Piece(chunk, False, doc))

    for a, b in cuts:
        if a < pos:  # overlapping cut (a JSON paragraph that contains a tag, say): extend
            if b > pos:
                pieces.append(Piece(text[pos:b], False, doc))
                pos = b
            continue
        add_free(pos, a)
        pieces.append(Piece(text[a:b], False, doc))
        pos = b
    add_free(pos, len(text))
    return _merge(pieces)


def _merge(pieces: list[Piece]) -> list[Piece]:
    """Join neighbouring protected pieces of the same document (fewer, larger pieces)."""
    out: list[Piece] = []
    for p in pieces:
        if not p.text:
            continue
        if out and not p.compress and not out[-1].compress and out[-1].doc == p.doc and not (p.header or out[-1].header):
            out[-1] = Piece(out[-1].text + p.text, False, p.doc)
        else:
            out.append(p)
    return out


def _tail_start(text: str, start: int) -> int:
    """Where the trailing question of the last user text begins (len(text) if none found)."""
    q = None
    for m in _QUESTION_LINE.finditer(text, start):
        q = m.start()
    if q is not None:
        return q
    body = text.rstrip()
    # The last paragraph, if it is a question.
    cut = body.rfind("\n\n", start)
    last = body[cut + 2:] if cut >= 0 else body[start:]
    if cut >= 0 and last.strip().endswith(("?", "？")) and estimate_tokens(last) < 400:
        return cut + 2
    return len(text)


def _split_last_sentence(text: str) -> int:
    """Start of the last sentence (or last line) of a single-paragraph text."""
    body = text.rstrip()
    nl = body.rfind("\n")
    ends = [m.end() for m in _SENTENCE_END.finditer(body, 0, max(0, len(body) - 1))]
    cand = max([nl + 1 if nl >= 0 else 0] + ends)
    return cand


@dataclass(slots=True)
class _Builder:
    opts: SegmentOptions
    slots: list[Slot] = field(default_factory=list)
    docs: list[Document] = field(default_factory=list)

    def keep(self, path: tuple[str | int, ...], text: str) -> None:
        self.slots.append(Slot(path, (Piece(text, False),)))

    def context(self, path: tuple[str | int, ...], text: str, *, last_user: bool, whole_doc: bool) -> str:
        """A user/tool text. Returns the question text found at its end ("" if none)."""
        opts = self.opts
        if estimate_tokens(text) < opts.min_segment_tokens or _looks_json(text):
            self.keep(path, text)
            return text if last_user else ""
        si = len(self.slots)
        first_doc = len(self.docs)
        # Region boundaries never fall inside a protected block: a marker inside a code fence is not a
        # document, and a cut inside a block moves to the block's start.
        blocks = [m.span() for m in _BLOCKS.finditer(text)]

        def inside(pos: int) -> int | None:
            for a, b in blocks:
                if a < pos < b:
                    return a
            return None

        markers = [m for m in _DOC_MARKER.finditer(text) if inside(m.start()) is None]
        pieces: list[Piece] = []
        question = ""
        end = len(text)
        if last_user:
            if markers:
                end = _tail_start(text, markers[-1].end())
            else:
                # Long user context without document markers: the last paragraph is the request (or the
                # last sentence, when there is one paragraph); the first paragraph is often the
                # instruction, kept when short.
                cut = text.rstrip().rfind("\n\n")
                end = cut + 2 if cut >= 0 else _split_last_sentence(text)
            moved = inside(end)
            if moved is not None:
                end = moved
            question = text[end:]
        if markers:
            # Preamble before the first document: instructions, kept.
            if markers[0].start() > 0:
                pieces.append(Piece(text[: markers[0].start()], False))
            bounds = [m.start() for m in markers] + [end]
            for k, m in enumerate(markers):
                a, b = m.start(), max(m.start(), bounds[k + 1])
                if a >= end:
                    break
                di = len(self.docs)
                pieces.append(Piece(text[a : min(m.end(), b)], False, di, header=True))
                pieces.extend(_region_pieces(text[min(m.end(), b) : b], di, opts))
                body_text = text[min(m.end(), b) : b]
                self.docs.append(Document(si, (), False, body_text, estimate_tokens(body_text)))
        else:
            head = 0
            if not whole_doc:
                para = text.find("\n\n")
                if 0 <= para < end and estimate_tokens(text[:para]) < opts.min_segment_tokens:
                    head = para + 2
                    if inside(head) is not None:
                        head = 0
            if head:
                pieces.append(Piece(text[:head], False))
            di: int | None = None
            if whole_doc:
                di = len(self.docs)
            first = len(pieces)
            pieces.extend(_region_pieces(text[head:end], di, opts))
            if whole_doc and any(p.compress for p in pieces[first:]):
                body_text = text[head:end]
                self.docs.append(Document(si, (), True, body_text, estimate_tokens(body_text)))
            elif whole_doc:
                pieces[first:] = [Piece(p.text, p.compress, None, p.atoms) for p in pieces[first:]]
        if end < len(text):
            pieces.append(Piece(text[end:], False))
        merged = _merge(pieces)
        # Piece indices of each document of this slot, taken after merging (which renumbers pieces).
        for di in range(first_doc, len(self.docs)):
            d = self.docs[di]
            idx = tuple(k for k, p in enumerate(merged) if p.doc == di)
            self.docs[di] = Document(d.slot, idx, d.whole_message, d.text, d.tokens)
        self.slots.append(Slot(path, tuple(merged)))
        return question


def _text_slots(content: Any, base: tuple[str | int, ...]) -> list[tuple[tuple[str | int, ...], str]]:
    """The strings of a message's content: a plain string, or the `text` of each text part (non-text parts
    are left where they are)."""
    if isinstance(content, str):
        return [(base, content)]
    out: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                out.append(((*base, j, "text"), part["text"]))
    return out


# Text part types: chat's `text`; the Responses API's `input_text` (user) and `output_text` (assistant).
_RESPONSE_TEXT_PARTS = frozenset({"text", "input_text", "output_text"})

_Turn = tuple[Any, list[tuple[tuple[str | int, ...], str]]]


def _response_item(item: Any, i: int) -> _Turn | None:
    """A Responses API input item as a chat message: (role, its text slots), or None when it is none."""
    if not isinstance(item, dict):
        return None
    kind = item.get("type", "message")
    if kind == "function_call_output":
        out = item.get("output")
        return ("tool", [(("input", i, "output"), out)] if isinstance(out, str) else [])
    if kind != "message":
        return None
    content = item.get("content")
    base: tuple[str | int, ...] = ("input", i, "content")
    if isinstance(content, str):
        return (item.get("role"), [(base, content)])
    slots: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(content, list):
        for j, part in enumerate(content):
            if isinstance(part, dict) and part.get("type") in _RESPONSE_TEXT_PARTS and isinstance(part.get("text"), str):
                slots.append(((*base, j, "text"), part["text"]))
    return (item.get("role"), slots)


def _messages(b: "_Builder", turns: Sequence[_Turn | None], opts: SegmentOptions, earlier: list[int]) -> str:
    """Chat's rules over a list of messages (None: not a message); returns the question found."""
    question = ""
    last_user = max((i for i, t in enumerate(turns) if t is not None and t[0] == "user"), default=-1)
    last_assistant = -1 if opts.rewrite_earlier_turns else max(
        (i for i, t in enumerate(turns) if t is not None and t[0] == "assistant"), default=-1,
    )
    for i, turn in enumerate(turns):
        if turn is None:
            continue
        role, texts = turn
        if not isinstance(role, str):  # hostile input (a list, an object): kept as it is
            role = None
        for k, (p, t) in enumerate(texts):
            if role not in _CONTEXT_ROLES or i < last_assistant:
                if role in _CONTEXT_ROLES:
                    earlier.append(len(b.slots))
                b.keep(p, t)
                continue
            is_last = i == last_user and k == len(texts) - 1
            # A whole earlier user message or a tool output is one document of a multi-message
            # RAG prompt (unless it carries its own markers).
            q = b.context(p, t, last_user=is_last, whole_doc=not is_last)
            if is_last:
                question = q
    return question


def segment(path: str, body: Mapping[str, Any], opts: SegmentOptions = SegmentOptions()) -> Segmentation:
    """Split a parsed request body into slots and pieces. Never raises on a dict body of any shape."""
    b = _Builder(opts)
    question = ""
    earlier: list[int] = []
    if path.endswith("/chat/completions"):
        messages = body.get("messages")
        if isinstance(messages, list):
            turns = [
                (m.get("role"), _text_slots(m.get("content"), ("messages", i, "content"))) if isinstance(m, dict) else None
                for i, m in enumerate(messages)
            ]
            question = _messages(b, turns, opts, earlier)
    elif path.endswith("/responses"):
        # The Responses API under chat's rules: `instructions` is the system prompt (kept), `input` a
        # string (the user's message) or a list of items: messages (role + content string or parts) and
        # function-call outputs (a tool message). Other items (function calls, reasoning) are kept as
        # they are, and so is everything but those strings.
        instructions = body.get("instructions")
        if isinstance(instructions, str):
            b.keep(("instructions",), instructions)
        inp = body.get("input")
        if isinstance(inp, str):
            question = b.context(("input",), inp, last_user=True, whole_doc=False)
        elif isinstance(inp, list):
            question = _messages(b, [_response_item(item, i) for i, item in enumerate(inp)], opts, earlier)
    elif path.endswith("/completions"):
        prompt = body.get("prompt")
        if isinstance(prompt, str):
            question = b.context(("prompt",), prompt, last_user=True, whole_doc=False)
        elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
            question = b.context(("prompt", 0), prompt[0], last_user=True, whole_doc=False)
        # A list of several prompts is a batch of separate requests: left as it is.
    slots = tuple(b.slots)
    total = sum(estimate_tokens(s.text) for s in slots)
    comp = sum(estimate_tokens(p.text) for s in slots for p in s.pieces if p.compress)
    return Segmentation(slots, tuple(b.docs), question.strip(), total, comp, tuple(earlier))


# ---- compressed text back onto the original ---------------------------------------------------------------
def _sep(gap: str) -> str:
    n = gap.count("\n")
    if n >= 2:
        return "\n\n"
    if n == 1:
        return "\n"
    return " " if any(c.isspace() for c in gap) else ""


def _align_units(toks: Sequence[str], want: Sequence[str], keep: list[bool]) -> bool:
    """Mark the units of `want` in `toks` (greedy, in order); False if `want` is not a subsequence."""
    marks: list[int] = []
    i = 0
    for w in want:
        while i < len(toks) and toks[i] != w:
            i += 1
        if i == len(toks):
            return False
        marks.append(i)
        i += 1
    for i in marks:
        keep[i] = True
    return True


def _align_chars(toks: Sequence[str], kept: str, keep: list[bool]) -> bool:
    """Fallback when the compressor fused or split units (it dropped the "-" of "INC-3823" and wrote
    "INC3823"): align the kept text's characters, not its units, and keep every unit whose characters
    were mostly matched. False if the kept characters are not a subsequence of the original's."""
    chars = [c for c in kept if not c.isspace()]
    matched = [0] * len(toks)
    ti = ci = 0
    for c in chars:
        while ti < len(toks):
            tok = toks[ti]
            while ci < len(tok) and tok[ci] != c:
                ci += 1
            if ci < len(tok):
                matched[ti] += 1
                ci += 1
                break
            ti += 1
            ci = 0
        else:
            return False
    for i, m in enumerate(matched):
        if m * 2 >= len(toks[i]) and m:
            keep[i] = True
    return True


def _mark(spans: Sequence[tuple[int, int]], keep: list[bool], ranges: Sequence[tuple[int, int]], when) -> None:
    """Set keep[] on every unit overlapping a char range of `ranges` for which when(unit indices) holds."""
    j = 0
    for a, b in sorted(ranges):
        while j < len(spans) and spans[j][1] <= a:
            j += 1
        k = j
        idx = []
        while k < len(spans) and spans[k][0] < b:
            idx.append(k)
            k += 1
        if idx and when(idx):
            for i in idx:
                keep[i] = True


def restore(
    original: str,
    kept: str | None,
    atoms: Sequence[tuple[int, int]] = (),
    *,
    keep_units: int | None = None,
    groups: Sequence[tuple[int, int]] = (),
) -> str | None:
    """The original text with only the units the compressor kept (plus every atom), separated the way the
    original was (a newline where a newline was dropped, a space where a space was, nothing between CJK
    characters). `kept=None, keep_units=n` keeps the first n units instead (a stub). Atoms are always
    kept; a group (a Japanese morpheme or name) with any unit kept is kept whole.

    Leading and trailing whitespace of `original` is kept as it is, so neighbouring protected pieces join
    exactly as before. Returns None when `kept` is not a subsequence of the original units (the caller
    then keeps the original): the result is never a text the client did not write.
    """
    spans = unit_spans(original)
    if not spans:
        return original
    toks = [original[a:b] for a, b in spans]
    keep = [False] * len(spans)
    if kept is None:
        for i in range(min(len(spans), keep_units or 0)):
            keep[i] = True
    elif not _align_units(toks, units(kept), keep) and not _align_chars(toks, kept, keep):
        return None
    if atoms:
        _mark(spans, keep, atoms, lambda idx: True)
    if groups:
        # A group (a morpheme) with any unit kept is kept whole: no kept span ends inside one.
        _mark(spans, keep, groups, lambda idx: any(keep[i] for i in idx))
    lead = original[: spans[0][0]]
    trail = original[spans[-1][1] :]
    out: list[str] = [lead]
    prev = -1
    for i, flag in enumerate(keep):
        if not flag:
            continue
        if prev >= 0:
            gap = original[spans[prev][1] : spans[i][0]]
            if i == prev + 1:
                out.append(gap)
            else:
                sep = _sep(gap)
                if not sep and len(units(toks[prev] + toks[i])) != 2:
                    # Two word pieces would fuse into one word ("GPU" + "H100" with the Japanese particle
                    # between them dropped): keep what was between them.
                    out.append(original[spans[prev][1] : spans[i][0]])
                else:
                    out.append(sep)
        out.append(toks[i])
        prev = i
    out.append(trail)
    text = "".join(out)
    # Never hand back something that is not a subsequence of the original units.
    if not is_subsequence(units(text), toks):
        return None
    return text


# ---- rebuild ----------------------------------------------------------------------------------------------
def _set_path(obj: Any, path: Sequence[str | int], value: str) -> Any:
    """A copy of `obj` with `value` at `path`; only the containers along the path are copied."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(obj, dict):
        new = dict(obj)
        new[head] = _set_path(obj[head], rest, value)
        return new
    if isinstance(obj, list):
        new_l = list(obj)
        new_l[head] = _set_path(obj[head], rest, value)  # type: ignore[index]
        return new_l
    raise TypeError(f"cannot descend into {type(obj).__name__}")


def rebuild(body: Mapping[str, Any], seg: Segmentation, replacements: Mapping[tuple[int, int], str]) -> dict[str, Any]:
    """`body` with each replaced piece's text swapped in. `body` itself is not modified."""
    out: Any = body
    for si, slot in enumerate(seg.slots):
        if not any((si, pi) in replacements for pi in range(len(slot.pieces))):
            continue
        text = "".join(replacements.get((si, pi), p.text) for pi, p in enumerate(slot.pieces))
        out = _set_path(out, slot.path, text)
    return dict(out)


def script_of(text: str) -> str:
    """'ja' when CJK characters make up a noticeable share of the text, else 'en' (space-delimited)."""
    if not text:
        return "en"
    sample = text[:4000]
    n = len(_CJK_RE.findall(sample))
    return "ja" if n * 5 >= len(sample.replace(" ", "")) else "en"
