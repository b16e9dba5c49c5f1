"""The seam between the compression policy (what to compress, how hard) and the model worker (how).

The policy side (segmentation, coarse step, rate control, the gateway rewriter) calls a FineCompressor;
the model side (LLMLingua-2 token classifier, batching worker, Japanese word segmentation) implements it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class FineResult:
    # One entry per input text, in order: the kept words joined the way the language needs
    # (spaces for space-delimited scripts, nothing for Japanese). Each is a subsequence of its input's words.
    texts: tuple[str, ...]
    tokens_before: tuple[int, ...]
    tokens_after: tuple[int, ...]
    # Wall time from submission to result, and the part of it spent waiting for the worker.
    elapsed_s: float
    queued_s: float


@dataclass(frozen=True, slots=True)
class Skipped:
    """The worker declined: 'saturated' (queue full), 'deadline' (would not finish in time),
    'language' (a text the model cannot compress safely), 'empty'."""

    reason: str


class FineCompressor(Protocol):
    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        """Keep about `rate` of each text's tokens (0 < rate <= 1). Never blocks the event loop."""
        ...

    def tokens_per_second(self) -> float | None:
        """Measured compression throughput (EWMA), None before the first measurement; feeds break-even."""
        ...

    async def close(self) -> None: ...
