"""The body-rewrite seam: how the compressor (or any other body transformer) plugs into the gateway.

The gateway calls `rewrite()` after the site is chosen, with the parsed body and everything it knows about
the request and the site. A rewriter returns None (leave the body untouched) or a Rewrite with the new
bytes; the gateway then replaces the body and sets `content-length` in the same ext_proc response (Envoy
answers 500 otherwise). A rewriter that raises, or overruns `deadline_s`, leaves the body untouched: a
rewrite is an optimisation, never a reason for a request to fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from extproc.gateway.loadmap.model import SiteLoad
from extproc.gateway.request.features import RequestFeatures
from extproc.gateway.routing.framework import Decision
from extproc.gateway.routing.views import SiteView


@dataclass(frozen=True, slots=True)
class RewriteRequest:
    path: str
    body: bytes
    parsed: dict[str, Any]
    features: RequestFeatures
    decision: Decision
    # The chosen site as the policy saw it, and its aggregated load (None if unknown).
    site: SiteView | None
    site_load: SiteLoad | None


@dataclass(frozen=True, slots=True)
class Rewrite:
    body: bytes
    # Extra request headers for the upstream (e.g. x-aigrid-compression: tokens before/after).
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Skip:
    """No rewrite, with the reason (for metrics and the decision header)."""

    reason: str
    headers: dict[str, str] = field(default_factory=dict)


class BodyRewriter(Protocol):
    async def rewrite(self, req: RewriteRequest) -> Rewrite | Skip: ...

    async def close(self) -> None: ...
