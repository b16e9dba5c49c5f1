"""What the policy knows about a request: plain data built once per request by the request parser."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class SlaClass(str, Enum):
    """From the `x-aigrid-priority` header; anything else (or nothing) is standard."""

    realtime = "realtime"
    standard = "standard"
    batch = "batch"

    @classmethod
    def parse(cls, value: str | None) -> "SlaClass":
        if value:
            v = value.strip().lower()
            for c in cls:
                if c.value == v:
                    return c
        return cls.standard


@dataclass(frozen=True, slots=True)
class RequestFeatures:
    prompt_tokens: int = 0
    model: str | None = None
    stream: bool = False
    sla: SlaClass = SlaClass.standard
    # Stable across the turns of one conversation (client header, OpenAI `user`, or a prefix hash).
    conversation_key: str | None = None
    # Whether the body was understood; an unparsed request routes on load alone.
    parsed: bool = True
    # Chained hashes of the prompt's leading 64-character blocks (GIE-style approximate prefix), filled
    # only when a step of the active profile reads them.
    prefix_blocks: tuple[int, ...] = ()
    # Whether the request runs inference on a GPU (counted in flight): true for the inspected POST paths,
    # parsed or not; false for GET /v1/models and other pass-through traffic.
    inference: bool = True
    # How long the gateway has already held this request back (a picker's hold decision; see
    # `Decision.hold_ms`): 0 on its first decision.
    held_ms: float = 0.0
