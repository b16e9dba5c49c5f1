"""Incremental Server-Sent-Events parsing and per-request stream accounting. PURE (times are passed in).

Network chunks do not follow event boundaries: one chunk may hold half an event, several events, or split a
CRLF or a multi-byte UTF-8 character in two. The parser therefore buffers *bytes* and only decodes complete
lines, and treats a trailing CR as undecided until the next byte shows whether an LF follows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson


class SseParser:
    """Feed bytes, get the `data` payload of every complete event (multi-line data joined with "\\n").

    Follows the WHATWG event-stream rules that matter for OpenAI streams: lines end in LF, CRLF or CR; a
    blank line dispatches the event; `data:` strips one leading space; comment lines (`:`) and other fields
    (`event:`, `id:`, `retry:`) are ignored; an event with no data lines dispatches nothing.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[str]:
        self._buf += chunk
        out: list[str] = []
        start = 0
        buf = self._buf
        n = len(buf)
        i = 0
        while i < n:
            b = buf[i]
            if b == 0x0A or b == 0x0D:  # LF or CR
                if b == 0x0D:
                    if i + 1 == n:
                        break  # a CR at the very end: wait to see whether an LF follows
                    end = i + 2 if buf[i + 1] == 0x0A else i + 1
                else:
                    end = i + 1
                self._line(bytes(buf[start:i]), out)
                start = i = end
                continue
            i += 1
        del self._buf[:start]
        return out

    def close(self) -> list[str]:
        """End of stream: a final line without its terminator still counts, and a last event whose blank
        line never came is delivered rather than lost (lenient: a truncated stream shows what it had)."""
        out: list[str] = []
        if self._buf:
            tail = bytes(self._buf).rstrip(b"\r")
            self._buf.clear()
            self._line(tail, out)
        if self._data:
            out.append("\n".join(self._data))
            self._data = []
        return out

    def _line(self, raw: bytes, out: list[str]) -> None:
        if not raw:
            if self._data:
                out.append("\n".join(self._data))
                self._data = []
            return
        line = raw.decode("utf-8", errors="replace")
        if line.startswith(":"):
            return
        name, sep, value = line.partition(":")
        if not sep:
            name, value = line, ""
        elif value.startswith(" "):
            value = value[1:]
        if name == "data":
            self._data.append(value)


@dataclass
class StreamStats:
    """What one streamed OpenAI response showed the client."""

    first_token_t: float | None = None
    last_token_t: float | None = None
    # Gaps between consecutive content-bearing events (one event is usually one token; when a server
    # batches several tokens into one event the gap is per event, which is what the client experiences).
    gaps: list[float] = field(default_factory=list)
    content_events: int = 0
    usage: dict[str, Any] | None = None
    done: bool = False
    error: str | None = None
    bad_events: int = 0

    def on_event(self, data: str, t: float) -> None:
        if data.strip() == "[DONE]":
            self.done = True
            return
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError:
            self.bad_events += 1
            return
        if not isinstance(obj, dict):
            self.bad_events += 1
            return
        if "error" in obj and self.error is None:
            err = obj["error"]
            self.error = str(err.get("message", err)) if isinstance(err, dict) else str(err)
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.usage = usage
        if _has_content(obj):
            if self.first_token_t is None:
                self.first_token_t = t
            elif self.last_token_t is not None:
                self.gaps.append(t - self.last_token_t)
            self.last_token_t = t
            self.content_events += 1


def _has_content(obj: dict[str, Any]) -> bool:
    choices = obj.get("choices")
    if not isinstance(choices, list):
        return False
    for c in choices:
        if not isinstance(c, dict):
            continue
        delta = c.get("delta")
        if isinstance(delta, dict) and (delta.get("content") or delta.get("reasoning_content")):
            return True
        if c.get("text"):  # /v1/completions streams
            return True
    return False
