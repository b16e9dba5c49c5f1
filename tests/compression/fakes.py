"""Test doubles for the policy side: a FineCompressor that keeps every other unit (deterministic, no
model), and helpers to build gateway RewriteRequests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from extproc.gateway.compression.core.fine import FineResult, Skipped
from extproc.gateway.compression.core.segment import units
from extproc.gateway.loadmap.model import SiteLoad
from extproc.gateway.request.openai import body_features
from extproc.gateway.compression.seam import RewriteRequest
from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.framework import Decision
from extproc.gateway.routing.views import SiteView
from extproc.gateway.config.schema import SiteRole


class EveryOther:
    """Keeps about `rate` of each text's units, spread evenly; joined with spaces (like LLMLingua-2
    output for English)."""

    def __init__(self, skip: str | None = None, garbage: bool = False) -> None:
        self.skip = skip
        self.garbage = garbage
        self.calls: list[tuple[list[str], float]] = []
        self.closed = False

    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        self.calls.append((list(texts), rate))
        if self.skip:
            return Skipped(self.skip)
        out = []
        for t in texts:
            us = units(t)
            acc = 0.0
            kept = []
            for u in us:
                acc += rate
                if acc >= 1.0:
                    acc -= 1.0
                    kept.append(u)
            out.append("NOT IN ORIGINAL" if self.garbage else " ".join(kept))
        n = tuple(len(units(t)) for t in texts)
        return FineResult(tuple(out), n, tuple(len(units(o)) for o in out), 0.001, 0.0)

    def tokens_per_second(self) -> float | None:
        return 1e9

    async def close(self) -> None:
        self.closed = True


class RandomKeep(EveryOther):
    """Keeps a different random subset of units on every call: a compressor whose output depends on more
    than its input (like int8 activations quantised per batch)."""

    def __init__(self, seed: int = 1) -> None:
        super().__init__()
        import random

        self.rng = random.Random(seed)

    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        self.calls.append((list(texts), rate))
        if self.skip:
            return Skipped(self.skip)
        out = tuple(" ".join(u for u in units(t) if self.rng.random() < rate) for t in texts)
        n = tuple(len(units(t)) for t in texts)
        return FineResult(out, n, tuple(len(units(o)) for o in out), 0.001, 0.0)


def make_request(
    body: dict[str, Any],
    *,
    path: str = "/v1/chat/completions",
    pressure: float | None = 0.95,
    waiting: int | None = None,
    sla: SlaClass = SlaClass.standard,
    raw: bytes | None = None,
) -> RewriteRequest:
    raw = orjson.dumps(body) if raw is None else raw
    feats = body_features(path, body, sla)
    view = SiteView("edge", SiteRole.edge, 1.0, False, True, pressure, 0.1)
    load = SiteLoad("edge", 1, 1, 1, 0.5, 0.5, pressure, 4, waiting, 8, 0.0)
    return RewriteRequest(path, raw, body, feats, Decision("edge", "test", "test", pressure), view, load)
