"""Pure functions over an OpenAI-style request: headers → whether to look at the body; body → features.

Anything we do not fully understand is passed through byte-for-byte: the worst a strange request can get
from us is routing on load alone, never a changed body or an error.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
import xxhash

from extproc.gateway.request.features import RequestFeatures, SlaClass
from extproc.wire.contract import (
    CHAT_PATH,
    INFERENCE_PATHS,
    INSPECTED_PATHS,
    MODELS_PATH,
    PRIORITY_HEADER,
    RESPONSES_PATH,
)

__all__ = ["INSPECTED_PATHS", "PRIORITY_HEADER", "Inspection", "inspect_headers", "parse_json_body", "body_features", "header_features"]


@dataclass(frozen=True, slots=True)
class Inspection:
    """Verdict on the request headers: look at the body, or pass it through (and why)."""

    inspect: bool
    reason: str
    path: str = ""
    sla: SlaClass = SlaClass.standard
    # False for chunked bodies: their size is unknown until they end, so they are buffered partially
    # (never a 413 from us) and routed, but not rewritten.
    has_length: bool = True
    # The request runs inference on a GPU (an inference path, POST), inspected or not: counted in flight.
    inference: bool = False
    # GET /v1/models: the gateway may answer it with the models of the grid's sites.
    list_models: bool = False
    # The declared body size (content-length), when there is one: the headers-only path's token estimate.
    content_length: int | None = None


def inspect_headers(headers: Mapping[str, str], max_body_bytes: int, sla: SlaClass | None = None) -> Inspection:
    """Headers are lower-case names (as HTTP/2 and Envoy give them). `sla`: the class the trust rule
    resolved (the gateway passes it); without it, the priority header's class."""
    method = headers.get(":method", "")
    path = headers.get(":path", "")
    if "?" in path:
        path = path.split("?", 1)[0]
    if sla is None:
        sla = SlaClass.parse(headers.get(PRIORITY_HEADER))
    if method != "POST":
        return Inspection(False, "method", path, sla, list_models=method == "GET" and path == MODELS_PATH)
    if path not in INSPECTED_PATHS:
        return Inspection(False, "path", path, sla, inference=path in INFERENCE_PATHS)
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        return Inspection(False, "content_type", path, sla, inference=True)
    enc = headers.get("content-encoding", "").strip().lower()
    if enc not in ("", "identity"):
        return Inspection(False, "content_encoding", path, sla, inference=True)
    clen = headers.get("content-length")
    n: int | None = None
    if clen is not None:
        try:
            n = int(clen)
        except ValueError:
            return Inspection(False, "content_length", path, sla, inference=True)
        if n > max_body_bytes:
            return Inspection(False, "too_large", path, sla, inference=True, content_length=n)
    return Inspection(True, "inspect", path, sla, has_length=clen is not None, inference=True, content_length=n)


def parse_json_body(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None (invalid JSON or UTF-8, too deeply nested, not an object)."""
    try:
        obj = orjson.loads(body)
    except (orjson.JSONDecodeError, RecursionError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def estimate_tokens(text: str) -> int:
    """Cheap prompt-token estimate: ~4 ASCII characters per token, ~1 token per CJK character.

    UTF-8 length minus character count is 2 per 3-byte (CJK) character, so this needs no per-char loop.
    """
    n = len(text)
    if n == 0:
        return 0
    if text.isascii():  # the common case, without encoding a copy of the text
        return max(1, n // 4)
    extra = len(text.encode("utf-8", "surrogatepass")) - n
    wide = extra // 2
    return max(1, (n - wide) // 4 + wide)


def _content_text_len(content: Any) -> int:
    if isinstance(content, str):
        return estimate_tokens(content)
    total = 0
    if isinstance(content, list):
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                total += estimate_tokens(part["text"])
    return total


def _responses_input_tokens(body: Mapping[str, Any]) -> int:
    """/v1/responses: `instructions` plus `input`, a string or a list of items (messages whose content
    is a string or parts with `input_text`/`text`)."""
    total = 0
    instr = body.get("instructions")
    if isinstance(instr, str):
        total += estimate_tokens(instr)
    inp = body.get("input")
    if isinstance(inp, str):
        return total + estimate_tokens(inp)
    if isinstance(inp, list):
        for item in inp:
            if not isinstance(item, dict):
                continue
            content = item.get("content")
            if isinstance(content, str):
                total += estimate_tokens(content) + 4
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        total += estimate_tokens(part["text"])
                total += 4
    return total


def _prompt_tokens(path: str, body: Mapping[str, Any]) -> int:
    if path == CHAT_PATH:
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        # ~4 tokens of chat-template overhead per message. A plain loop, string content inline: this runs
        # on every chat request, and a generator plus a call per message cost more than the counting.
        total = 0
        for m in messages:
            if isinstance(m, dict):
                c = m.get("content")
                total += (estimate_tokens(c) if isinstance(c, str) else _content_text_len(c)) + 4
        return total
    if path == RESPONSES_PATH:
        return _responses_input_tokens(body)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list):
        return sum(estimate_tokens(p) if isinstance(p, str) else (len(p) if isinstance(p, list) else 0) for p in prompt)
    return 0


def _conversation_key(
    path: str, body: Mapping[str, Any], header_key: str | None, chains: Callable[[str], str | None] | None = None
) -> str | None:
    """Stable across turns: the client's header, else the OpenAI `user` field, else a hash of the prefix
    up to and including the first user message (what every later turn repeats, and what a KV prefix
    cache can reuse). The Responses API has its own rules (`_responses_key`)."""
    if path == RESPONSES_PATH:
        return _responses_key(body, header_key, chains)
    if header_key:
        return "h:" + header_key[:256]
    user = body.get("user")
    if isinstance(user, str) and user:
        return "u:" + user[:256]
    if path != CHAT_PATH:
        return None
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    prefix: list[Any] = []
    for m in messages:
        prefix.append(m)
        if isinstance(m, dict) and m.get("role") == "user":
            break
    try:
        raw = orjson.dumps(prefix)
    except TypeError:
        return None
    return "p:" + xxhash.xxh3_64_hexdigest(raw)


def _digest(kind: str, value: str | bytes) -> str:
    raw = value.encode("utf-8", "surrogatepass") if isinstance(value, str) else value
    return "r:" + xxhash.xxh3_64_hexdigest(kind.encode() + b"\0" + raw)


def _responses_key(
    body: Mapping[str, Any], header_key: str | None, chains: Callable[[str], str | None] | None
) -> str | None:
    """/v1/responses, first match wins: the client's header, `user`, `prompt_cache_key` (named by the
    client, stable by design); a `previous_response_id` the chain table knows (the key of the chain's
    first turn, `chains.py`) or, unknown, that id itself (siblings of one response agree); instructions
    plus the first input item (what later turns repeat when the client resends the history).
    Always a digest ("r:..."): the key travels to the response side in a request header (the observer's
    summary) and may be logged there, so it carries no client text."""
    if header_key:
        return _digest("h", header_key[:256])
    for field, kind in (("user", "u"), ("prompt_cache_key", "c")):
        v = body.get(field)
        if isinstance(v, str) and v:
            return _digest(kind, v[:256])
    prev = body.get("previous_response_id")
    if isinstance(prev, str) and prev:
        known = chains(prev) if chains is not None else None
        return known if known is not None else _digest("prev", prev[:256])
    inp = body.get("input")
    first: Any = inp if isinstance(inp, str) else (inp[0] if isinstance(inp, list) and inp else None)
    if first is None:
        return None
    try:
        raw = orjson.dumps([body.get("instructions"), first])
    except TypeError:
        return None
    return _digest("p", raw)


# GIE's approximate prefix: 64-character blocks (about 16 tokens), chained, at most this many.
PREFIX_BLOCK_CHARS = 64
MAX_PREFIX_BLOCKS = 256


def _prompt_text(path: str, body: Mapping[str, Any]) -> str:
    """The prompt as one string, in the order the engine sees it (roles included for chat)."""
    if path == CHAT_PATH:
        messages = body.get("messages")
        parts: list[str] = []
        if isinstance(messages, list):
            for m in messages:
                if not isinstance(m, dict):
                    continue
                c = m.get("content")
                if isinstance(c, list):
                    c = "".join(p["text"] for p in c if isinstance(p, dict) and isinstance(p.get("text"), str))
                parts.append(f"<{m.get('role')}>{c if isinstance(c, str) else ''}")
        return "".join(parts)
    if path == RESPONSES_PATH:
        try:
            return orjson.dumps([body.get("instructions"), body.get("input")]).decode()
        except TypeError:
            return ""
    prompt = body.get("prompt")
    return prompt if isinstance(prompt, str) else ""


def prefix_blocks(text: str) -> tuple[int, ...]:
    """Chained hashes of the text's full leading blocks: block i's hash covers every block before it,
    so two prompts share a leading run of hashes exactly as long as they share a leading run of text.
    Python's hash: only ever compared within one process (a gateway's own index)."""
    out: list[int] = []
    h = 0
    n = min(len(text) // PREFIX_BLOCK_CHARS, MAX_PREFIX_BLOCKS)
    for i in range(n):
        h = hash((h, text[i * PREFIX_BLOCK_CHARS : (i + 1) * PREFIX_BLOCK_CHARS]))
        out.append(h)
    return tuple(out)


def body_features(
    path: str,
    body: Mapping[str, Any],
    sla: SlaClass,
    conversation_header: str | None = None,
    *,
    with_prefix_blocks: bool = False,
    chains: Callable[[str], str | None] | None = None,
) -> RequestFeatures:
    """`chains`: the Responses API chain lookup (response id → conversation key), `ResponseChains.get`."""
    model = body.get("model")
    return RequestFeatures(
        prompt_tokens=_prompt_tokens(path, body),
        model=model if isinstance(model, str) else None,
        stream=body.get("stream") is True,
        sla=sla,
        conversation_key=_conversation_key(path, body, conversation_header, chains),
        parsed=True,
        prefix_blocks=prefix_blocks(_prompt_text(path, body)) if with_prefix_blocks else (),
    )


# JSON framing per prompt token is small; a body of N bytes carries roughly N/4 tokens of text.
_BYTES_PER_TOKEN = 4


def header_features(insp: Inspection, conversation_header: str | None = None) -> RequestFeatures:
    """Features from the request headers alone (the headers-only path: no body buffered): SLA class,
    the conversation header, and a prompt-size estimate from content-length."""
    return RequestFeatures(
        prompt_tokens=(insp.content_length or 0) // _BYTES_PER_TOKEN,
        sla=insp.sla,
        conversation_key=("h:" + conversation_header[:256]) if conversation_header else None,
        parsed=False,
        inference=insp.inference,
    )
