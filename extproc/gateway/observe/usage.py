"""Token usage out of response bytes. Pure and incremental.

An OpenAI-compatible server reports usage in a non-stream body's `usage` object, and, in a stream whose
request set `stream_options.include_usage`, in one extra chunk `{"choices": [], "usage": {...}}` just
before `data: [DONE]`. Envoy hands the body over in whatever pieces the upstream's writes and the sockets
made, so an SSE event may be split across pieces (or several may share one): `SseUsageScanner` keeps the
tail after the last event boundary and only looks at complete events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

# Bodies and pending SSE tails above this are given up on (usage unknown), never grown without bound.
MAX_BUFFER_BYTES = 4 * 1024 * 1024
_USAGE_KEY = b'"usage"'


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    # The `model` of the object that carried the usage (gen_ai.response.model); "" when it named none.
    model: str = ""

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


def usage_from_object(obj: object) -> Usage | None:
    """The `usage` of a decoded response object, or None when absent or malformed (never raises)."""
    if not isinstance(obj, dict):
        return None
    u = obj.get("usage")
    if not isinstance(u, dict):
        return None
    p, c = u.get("prompt_tokens"), u.get("completion_tokens")
    if not isinstance(p, int) or not isinstance(c, int) or isinstance(p, bool) or isinstance(c, bool) or p < 0 or c < 0:
        return None
    cached = 0
    details = u.get("prompt_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("cached_tokens"), int):
        cached = max(0, details["cached_tokens"])
    model = obj.get("model")
    return Usage(p, c, cached, model if isinstance(model, str) else "")


def usage_from_body(body: bytes) -> Usage | None:
    """Usage of a complete non-stream JSON response body."""
    if _USAGE_KEY not in body:
        return None
    try:
        return usage_from_object(orjson.loads(body))
    except orjson.JSONDecodeError:
        return None


def _boundary_end(buf: bytes) -> int:
    """End offset of the last complete SSE event in `buf` (0 when none). Events end in a blank line:
    LF LF or CR LF CR LF (the SSE spec also allows CR CR, which no inference server sends)."""
    a = buf.rfind(b"\n\n")
    b = buf.rfind(b"\r\n\r\n")
    end_a = a + 2 if a >= 0 else 0
    end_b = b + 4 if b >= 0 else 0
    return max(end_a, end_b)


def split_events(block: bytes) -> list[bytes]:
    """A block of complete events → each event with its own trailing blank line (bytes kept exactly)."""
    out: list[bytes] = []
    i, n = 0, len(block)
    while i < n:
        a = block.find(b"\n\n", i)
        b = block.find(b"\r\n\r\n", i)
        cands = [x + 2 for x in (a,) if x >= 0] + [x + 4 for x in (b,) if x >= 0]
        end = min(cands) if cands else n
        out.append(block[i:end])
        i = end
    return out


def count_events(block: bytes) -> int:
    """Complete events in a block of complete events (as split_events would make), `[DONE]` excluded."""
    if b"\r\n\r\n" in block:
        n = len(split_events(block))
    else:
        n = block.count(b"\n\n")
    return n - (1 if b"data: [DONE]" in block or b"data:[DONE]" in block else 0)


def event_data(event: bytes) -> bytes:
    """The data field of one event (multi-line data joined by LF, per the SSE spec)."""
    parts = []
    for line in event.splitlines():
        if line.startswith(b"data:"):
            v = line[5:]
            parts.append(v[1:] if v.startswith(b" ") else v)
    return b"\n".join(parts)


def event_usage(event: bytes) -> tuple[Usage | None, bool]:
    """(usage carried by the event, whether the event is the usage-only chunk: `choices` empty)."""
    if _USAGE_KEY not in event:
        return None, False
    data = event_data(event)
    if not data or data == b"[DONE]":
        return None, False
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None, False
    u = usage_from_object(obj)
    only = u is not None and isinstance(obj, dict) and obj.get("choices") == []
    return u, only


class SseUsageScanner:
    """Feed the stream's pieces in order; `usage` is the last usage seen.

    With `strip=True`, `feed` returns the bytes to pass on with the usage-only chunk removed (for a stream
    whose usage the gateway asked for and the client did not): complete events go out at once, only an
    incomplete tail is held back until its end arrives (or the stream ends). Without strip, `feed` returns
    b"" and nothing is copied but that tail.
    """

    __slots__ = ("strip", "usage", "stripped", "overflow", "_pending", "events_seen", "last_events")

    def __init__(self, *, strip: bool = False) -> None:
        self.strip = strip
        self.usage: Usage | None = None
        self.stripped = 0
        self.overflow = False
        self._pending = b""
        self.events_seen = False
        # Complete events the last feed() ended, `data: [DONE]` not counted: the chunks a client
        # reading these bytes would have received at that moment (gen_ai.client.operation.*_chunk).
        self.last_events = 0

    def feed(self, piece: bytes) -> bytes:
        self.last_events = 0
        if self.overflow:
            return piece if self.strip else b""
        buf = self._pending + piece if self._pending else piece
        end = _boundary_end(buf)
        if end == 0:
            if len(buf) > MAX_BUFFER_BYTES:
                # One event larger than any real chunk: give up accounting, never hold the stream.
                self.overflow = True
                self._pending = b""
                return buf if self.strip else b""
            self._pending = buf
            return b""
        complete, self._pending = buf[:end], buf[end:]
        self.events_seen = True
        self.last_events = count_events(complete)
        if _USAGE_KEY not in complete:
            return complete if self.strip else b""
        kept: list[bytes] = []
        for ev in split_events(complete):
            u, only = event_usage(ev)
            if u is not None:
                self.usage = u
            if self.strip and only:
                self.stripped += 1
                continue
            kept.append(ev)
        return b"".join(kept) if self.strip else b""

    def finish(self) -> bytes:
        """End of stream: whatever incomplete tail was held back goes out unchanged."""
        tail, self._pending = self._pending, b""
        if tail and not self.overflow:
            u, _ = event_usage(tail)
            if u is not None:
                self.usage = u
        return tail if self.strip else b""


class BodyCollector:
    """A non-stream body arriving in pieces; usage parsed once at the end. Bounded."""

    __slots__ = ("_parts", "_size", "overflow")

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0
        self.overflow = False

    def feed(self, piece: bytes) -> None:
        if self.overflow:
            return
        self._size += len(piece)
        if self._size > MAX_BUFFER_BYTES:
            self.overflow = True
            self._parts.clear()
            return
        self._parts.append(piece)

    def usage(self) -> Usage | None:
        if self.overflow:
            return None
        return usage_from_body(b"".join(self._parts))


# A Responses API response id as OpenAI and vLLM write it ("resp_" + letters, digits, - and _), bounded.
_RESPONSE_ID = re.compile(rb'"id"\s*:\s*"(resp_[A-Za-z0-9_-]{1,200})"')
# How far into a response its id is looked for: a JSON body and a stream's `response.created` event
# both carry it in their first few hundred bytes.
ID_SEARCH_BYTES = 4096


def response_id_in(head: bytes) -> str | None:
    """The first response id in the first bytes of a response body (JSON or SSE), or None."""
    m = _RESPONSE_ID.search(head, 0, ID_SEARCH_BYTES)
    return m.group(1).decode("ascii") if m else None


_RESPONSE_ID_ONLY = re.compile(r"resp_[A-Za-z0-9_-]{1,200}")


def valid_response_id(value: str) -> bool:
    return _RESPONSE_ID_ONLY.fullmatch(value) is not None
