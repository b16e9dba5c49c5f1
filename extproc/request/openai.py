"""Pure functions over an OpenAI-style request: headers → whether to look at the body; body → features.

Anything we do not fully understand is passed through byte-for-byte: the worst a strange request can get
from us is routing on load alone, never a changed body or an error.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from extproc.routing.features import RequestFeatures, SlaClass

INSPECTED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
PRIORITY_HEADER = "x-aigrid-priority"


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


def inspect_headers(headers: Mapping[str, str], max_body_bytes: int) -> Inspection:
    """Headers are lower-case names (as HTTP/2 and Envoy give them)."""
    method = headers.get(":method", "")
    path = headers.get(":path", "").split("?", 1)[0]
    sla = SlaClass.parse(headers.get(PRIORITY_HEADER))
    if method != "POST":
        return Inspection(False, "method", path, sla)
    if path not in INSPECTED_PATHS:
        return Inspection(False, "path", path, sla)
    ctype = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if ctype != "application/json":
        return Inspection(False, "content_type", path, sla)
    enc = headers.get("content-encoding", "").strip().lower()
    if enc not in ("", "identity"):
        return Inspection(False, "content_encoding", path, sla)
    clen = headers.get("content-length")
    if clen is not None:
        try:
            n = int(clen)
        except ValueError:
            return Inspection(False, "content_length", path, sla)
        if n > max_body_bytes:
            return Inspection(False, "too_large", path, sla)
    return Inspection(True, "inspect", path, sla, has_length=clen is not None)


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


def _prompt_tokens(path: str, body: Mapping[str, Any]) -> int:
    if path == "/v1/chat/completions":
        messages = body.get("messages")
        if not isinstance(messages, list):
            return 0
        # ~4 tokens of chat-template overhead per message.
        return sum(_content_text_len(m.get("content")) + 4 for m in messages if isinstance(m, dict))
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        return estimate_tokens(prompt)
    if isinstance(prompt, list):
        return sum(estimate_tokens(p) if isinstance(p, str) else (len(p) if isinstance(p, list) else 0) for p in prompt)
    return 0


def _conversation_key(path: str, body: Mapping[str, Any], header_key: str | None) -> str | None:
    """Stable across turns: the client's header, else the OpenAI `user` field, else a hash of the prefix
    up to and including the first user message (what every later turn repeats, and what a KV prefix
    cache can reuse)."""
    if header_key:
        return "h:" + header_key[:256]
    user = body.get("user")
    if isinstance(user, str) and user:
        return "u:" + user[:256]
    if path != "/v1/chat/completions":
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
    return "p:" + hashlib.blake2b(raw, digest_size=8).hexdigest()


def body_features(
    path: str,
    body: Mapping[str, Any],
    sla: SlaClass,
    conversation_header: str | None = None,
) -> RequestFeatures:
    model = body.get("model")
    return RequestFeatures(
        prompt_tokens=_prompt_tokens(path, body),
        model=model if isinstance(model, str) else None,
        stream=body.get("stream") is True,
        sla=sla,
        conversation_key=_conversation_key(path, body, conversation_header),
        parsed=True,
    )
