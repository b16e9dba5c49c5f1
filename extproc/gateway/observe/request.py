"""The request side of response observation, pure: asking a stream for its usage, and the short summary
the routing filter hands to the observing filter in a request header.

Why a header: the two ext_proc filters open two gRPC streams that may land on different gateway replicas,
so nothing can be shared in memory. The routing filter writes `x-aigrid-obs`; the observing filter (next
in the chain) reads it; the route removes it before the request goes upstream, and the early header
mutation removes any client-sent copy.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote

import orjson

# Envoy dynamic-metadata namespace the usage Lua filter writes and the access-log receiver reads.
USAGE_NAMESPACE = "aigrid.usage"
# The Envoy attribute the observing ext_proc filter is configured to send with the response headers
# (`response_attributes`): the upstream host:port that answered (server.address / server.port).
UPSTREAM_ATTRIBUTE = "upstream.address"
_SUMMARY_VERSION = "1"


def wants_usage_injection(parsed: dict[str, Any]) -> bool:
    """A stream that did not ask for usage (stream: true, no stream_options.include_usage: true)."""
    if parsed.get("stream") is not True:
        return False
    so = parsed.get("stream_options")
    if so is None:
        return True
    return isinstance(so, dict) and so.get("include_usage") is not True


def inject_include_usage(body: bytes, parsed: dict[str, Any]) -> bytes | None:
    """The body with `stream_options.include_usage: true`, or None when there is nothing to do or the body
    is not a JSON object we can safely touch. Without a `stream_options` key the member is spliced in after
    the opening brace (no re-encode: the rest of the body stays byte-identical); otherwise the object is
    re-encoded with the other stream options kept."""
    if not wants_usage_injection(parsed):
        return None
    if "stream_options" not in parsed:
        i = 0
        n = len(body)
        while i < n and body[i] in b" \t\r\n":
            i += 1
        if i >= n or body[i : i + 1] != b"{":
            return None
        rest = body[i + 1 :].lstrip()
        sep = b"" if rest.startswith(b"}") else b","
        return body[: i + 1] + b'"stream_options":{"include_usage":true}' + sep + body[i + 1 :]
    so = parsed["stream_options"]
    if not isinstance(so, dict):
        return None  # the upstream will reject it anyway; leave the client's error to the client
    new = dict(parsed)
    new["stream_options"] = {**so, "include_usage": True}
    return orjson.dumps(new)


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """What the observer needs from the routing decision: model asked for, SLA class, operation,
    whether usage was asked for on the client's behalf (so its chunk must be stripped)."""

    model: str
    sla: str
    operation: str  # gen_ai.operation.name: chat | text_completion
    injected: bool = False
    stream: bool = False
    # A Responses API request's conversation key (a digest, never client text): the response side learns
    # which conversation the response id continues (`extproc.gateway.request.chains`). "" for others.
    conversation: str = ""

    def encode(self) -> str:
        s = f"{_SUMMARY_VERSION};{self.operation};{self.sla};{int(self.injected)}{int(self.stream)};{quote(self.model, safe='')}"
        # A sixth field only when there is one: every other request's header stays what older replicas
        # (and the usage Lua filter's pattern) read.
        return s + ";" + quote(self.conversation, safe=":") if self.conversation else s


def decode_summary(value: str | None) -> RequestSummary | None:
    """The header's value, or None for anything that is not exactly what `encode` writes."""
    if not value:
        return None
    parts = value.split(";")
    if len(parts) not in (5, 6) or parts[0] != _SUMMARY_VERSION or len(parts[3]) != 2 or set(parts[3]) - {"0", "1"}:
        return None
    flags = parts[3]
    return RequestSummary(
        model=unquote(parts[4]), sla=parts[2], operation=parts[1], injected=flags[0] == "1", stream=flags[1] == "1",
        conversation=unquote(parts[5])[:128] if len(parts) == 6 else "",
    )


def operation_name(path: str) -> str:
    """gen_ai.operation.name for an OpenAI path."""
    return "chat" if "/chat/" in path else "text_completion"


_TOKENS = re.compile(r"tokens=(\d+)->(\d+)")


def compression_estimate(header: str | None) -> tuple[int, int] | None:
    """(estimated prompt tokens before, after) from the compressor's `x-aigrid-compression` header,
    present only when the body was rewritten."""
    if not header:
        return None
    m = _TOKENS.search(header)
    if not m:
        return None
    before, after = int(m.group(1)), int(m.group(2))
    if before <= 0 or after <= 0 or after > before:
        return None
    return before, after


def prompt_tokens_saved(real_prompt_tokens: int, estimate: tuple[int, int] | None) -> int:
    """Prompt tokens compression kept off the GPU, in the site's own tokens: the real (post-compression)
    prompt count from usage, scaled by the compressor's before/after estimate. 0 when not compressed."""
    if estimate is None or real_prompt_tokens <= 0:
        return 0
    before, after = estimate
    return round(real_prompt_tokens * (before - after) / after)
