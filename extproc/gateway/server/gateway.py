"""The gateway's request logic, free of gRPC: inspect → features → route → (rewrite) → Outcome.

Routing state lives in the router and its steps (`extproc.gateway.routing.router`); this class adds what a
serving process needs around it: the snapshot source and clock, metrics, the grid's model list, the
body rewriter, and the answers the gateway gives itself (GET /v1/models, 404 for an unknown model).
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import orjson

from extproc.gateway.compression.seam import BodyRewriter, Rewrite, RewriteRequest, Skip
from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.request.chains import ResponseChains
from extproc.gateway.request.features import RequestFeatures, SlaClass
from extproc.gateway.request.openai import (
    Inspection,
    body_features,
    header_features,
    inspect_headers,
    parse_json_body,
)
from extproc.gateway.request.trust import (
    SlaSource,
    headers_read,
    resolve_sla,
    rule_from_settings,
)
from extproc.gateway.routing.framework import Decision
from extproc.gateway.routing.router import VIEW_TTL_S, Router
from extproc.gateway.routing.views import SiteView
from extproc.gateway.server.metrics import GatewayMetrics
from extproc.wire.contract import DECISION_HEADER, SITE_HEADER

log = logging.getLogger(__name__)

__all__ = ["DECISION_HEADER", "SITE_HEADER", "VIEW_TTL_S", "Gateway", "ImmediateAnswer", "Outcome"]


@dataclass(frozen=True, slots=True)
class ImmediateAnswer:
    """A response the gateway gives itself instead of forwarding (Envoy's ImmediateResponse)."""

    status: int
    body: bytes
    content_type: str = "application/json"


@dataclass(slots=True)
class Outcome:
    """What to tell Envoy: the site, and a new body when the rewriter produced one — or an answer."""

    site: str
    decision: Decision
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    immediate: ImmediateAnswer | None = None
    # The request as the gateway understood it (inspected requests only), for the response side.
    features: RequestFeatures | None = None
    parsed: dict | None = None


def model_not_found(model: str) -> bytes:
    """vLLM's error body for an unknown model (its OpenAI-compatible ErrorResponse, HTTP 404)."""
    return orjson.dumps({
        "error": {
            "message": f"The model `{model}` does not exist.",
            "type": "NotFoundError",
            "param": "model",
            "code": 404,
        }
    })


class Gateway:
    def __init__(
        self,
        config: GatewayConfig,
        snapshot_source: Callable[[], LoadSnapshot],
        *,
        rewriter: BodyRewriter | None = None,
        metrics: GatewayMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        profile: str | None = None,
    ) -> None:
        self.config = config
        self._snapshot = snapshot_source
        self.rewriter = rewriter
        self.metrics = metrics or GatewayMetrics()
        self._clock = clock
        self.router = Router(config, profile=profile, rng=rng)
        # Responses API chains (previous_response_id → the conversation's key), fed by the response side.
        self.chains = ResponseChains()
        # The body is buffered only when a routing step, the rewriter or the response side (usage by
        # model and class) reads it; otherwise the gateway answers in the request-headers phase (one
        # gRPC message, nothing buffered).
        self.needs_body = self.router.reads_body or rewriter is not None or config.observability.usage
        self._conv_header = config.gateway.conversation_header.lower()
        # Who may set the SLA class (extproc.trust): never the client's own x-aigrid-priority by default.
        self.trust = rule_from_settings(config.trust)
        self.wants_jwt = self.trust.source is SlaSource.jwt
        # Headers the request path reads (everything else is never decoded).
        self.wanted_headers = frozenset(
            {":method", ":path", "content-type", "content-encoding", "content-length", self._conv_header}
        ) | headers_read(self.trust)
        self._max_body = config.gateway.max_body_bytes
        self._decision_counters: dict[tuple[str, str, str], object] = {}
        # The grid's model list, kept while the router hands out the same views (see grid_models).
        self._models_of: list[SiteView] | None = None
        self._models: frozenset[str] | None = None
        self._prompt_tokens = self.metrics.prompt_tokens_before.labels()
        self._timing_every = config.routing.step_timing_sample
        self._decisions = 0
        self._step_hist: dict[str, object] = {}
        # How long a request may be held back in all (a picker's hold decisions): what Envoy's per-message
        # timeout leaves once the processor has extended it (envoy.max_message_timeout_ms; without it,
        # message_timeout_ms), less the compressor's own deadline and half a second of margin.
        env = config.envoy
        window = max(env.max_message_timeout_ms, env.message_timeout_ms)
        spent = config.compression.deadline_ms if config.compression.enabled else 0
        self.hold_budget_ms = float(max(0, window - spent - 500))
        # The timeout the processor asks Envoy for before it holds a request (None: it cannot extend).
        self.hold_timeout_ms: int | None = (
            env.max_message_timeout_ms if env.max_message_timeout_ms > env.message_timeout_ms else None)

    # -- load map events ----------------------------------------------------------------------------------
    def on_snapshot(self, snap: LoadSnapshot) -> None:
        """Called by the map reader on every change: advance the router's state, refresh gauges."""
        views = self.router.on_snapshot(snap, self._clock())
        spilling = self.router.site_status().get("spilling", {})
        m = self.metrics
        m.redis_connected.set(1 if snap.connected else 0)
        for v in views:
            m.site_pressure.labels(v.name).set(-1 if v.pressure is None else v.pressure)
            m.site_drained.labels(v.name).set(1 if v.drained else 0)
            m.site_spilling.labels(v.name).set(1 if spilling.get(v.name) else 0)

    # -- routing ------------------------------------------------------------------------------------------
    def views(self, now: float) -> list[SiteView]:
        return self.router.views(self._snapshot(), now)

    def _count_decision(self, site: str, step: str, sla: str) -> None:
        key = (site, step, sla)
        child = self._decision_counters.get(key)
        if child is None:
            child = self._decision_counters[key] = self.metrics.decisions.labels(site, step, sla)
        child.inc()  # type: ignore[attr-defined]

    def _time_step(self, step: str, seconds: float) -> None:
        h = self._step_hist.get(step)
        if h is None:
            h = self._step_hist[step] = self.metrics.step_seconds.labels(step)
        h.observe(seconds)  # type: ignore[attr-defined]

    def route(self, features: RequestFeatures) -> tuple[Decision, list[SiteView]]:
        self._decisions += 1
        timer = self._time_step if self._decisions % self._timing_every == 0 else None
        d, views = self.router.route(features, self._snapshot(), self._clock(), timer)
        if d.hold_ms > 0:
            self.metrics.holds.labels(features.sla.value).inc()
            return d, views
        self._count_decision(d.site, d.step, features.sla.value)
        if d.term:
            self.metrics.decided_by.labels(d.term).inc()
        for site in d.default_speed:
            self.metrics.default_speed.labels(site).inc()
        return d, views

    def inspect(self, headers: Mapping[str, str], jwt_payload: Mapping[str, object] | None = None) -> Inspection:
        return inspect_headers(headers, self._max_body, sla=resolve_sla(self.trust, headers, jwt_payload))

    def route_unparsed(self, sla: SlaClass, reason: str, *, inference: bool = False) -> Outcome:
        """A request whose body we do not look at: routed on load alone, body untouched."""
        self.metrics.passthrough.labels(reason).inc()
        d, _ = self.route(RequestFeatures(sla=sla, parsed=False, inference=inference))
        return Outcome(d.site, d)

    def route_headers(self, insp: Inspection, headers: Mapping[str, str]) -> Outcome:
        """The headers-only path: the active profile reads no body and nothing rewrites it."""
        d, _ = self.route(header_features(insp, headers.get(self._conv_header)))
        return Outcome(d.site, d)

    # -- answers of the gateway's own ---------------------------------------------------------------------
    def grid_models(self) -> frozenset[str] | None:
        """Models served by the sites a request could go to now (not drained, not known unhealthy);
        None when no site has a model list (configured or reported): the grid's models are unknown."""
        views = self.views(self._clock())
        # The router rebuilds its views (a new list) on a new snapshot or after VIEW_TTL_S, so the list's
        # identity says whether the set made from it is current: one set per rebuild, not per request.
        if views is self._models_of:
            return self._models
        models: frozenset[str] | None = None
        if any(v.models for v in views):
            out: set[str] = set()
            for v in views:
                if not v.drained and v.healthy is not False:
                    out |= v.models
            models = frozenset(out)
        self._models_of, self._models = views, models
        return models

    def list_models(self) -> Outcome | None:
        """GET /v1/models: the union over the grid's usable sites (OpenAI's list shape), or None to let
        the default site answer when the grid's models are unknown."""
        models = self.grid_models()
        if models is None:
            return None
        body = orjson.dumps({
            "object": "list",
            "data": [{"id": m, "object": "model", "created": 0, "owned_by": "aigrid"} for m in sorted(models)],
        })
        self.metrics.gateway_answers.labels("list_models").inc()
        d = Decision(self.config.default_site, "gateway: model list of the grid", "gateway")
        return Outcome(d.site, d, immediate=ImmediateAnswer(200, body))

    def _unknown_model(self, features: RequestFeatures) -> Outcome | None:
        model = features.model
        if model is None:
            return None
        models = self.grid_models()
        if models is None or model in models:
            return None
        self.metrics.gateway_answers.labels("model_not_found").inc()
        d = Decision(self.config.default_site, f"gateway: no site serves model {model[:64]!r}", "gateway")
        return Outcome(d.site, d, immediate=ImmediateAnswer(404, model_not_found(model)))

    # -- the body path ------------------------------------------------------------------------------------
    def route_body_now(
        self, insp: Inspection, body: bytes, headers: Mapping[str, str]
    ) -> tuple[Outcome, list[SiteView] | None]:
        """The body path's decision, synchronous: parse once, features, route. Returns the outcome and the
        views it was decided on (None when the body was not routed on: invalid JSON, unknown model)."""
        parsed = parse_json_body(body)
        if parsed is None:
            return self.route_unparsed(insp.sla, "invalid_json", inference=insp.inference), None
        features = body_features(
            insp.path, parsed, insp.sla, headers.get(self._conv_header),
            with_prefix_blocks=self.router.needs_prefix_blocks, chains=self.chains.get,
        )
        missing = self._unknown_model(features)
        if missing is not None:
            return missing, None
        self._prompt_tokens.value += features.prompt_tokens
        d, views = self.route(features)
        return Outcome(d.site, d, features=features, parsed=parsed), views

    async def hold(self, out: Outcome, views: list[SiteView] | None) -> tuple[Outcome, list[SiteView] | None]:
        """A decision that said "not yet": wait as it asks and decide again, until one routes the request.
        A wait that would take the request past `hold_budget_ms` in all is not made: the request is decided
        once more with holding off (held_ms infinite), so Envoy's message timeout never ends a held one."""
        held = 0.0
        t0 = time.perf_counter()
        while out.decision.hold_ms > 0 and out.features is not None:
            wait = out.decision.hold_ms
            if held + wait > self.hold_budget_ms:
                features = replace(out.features, held_ms=math.inf)
                d, views = self.route(features)
                if d.hold_ms > 0:
                    # A picker that holds whatever held_ms says (an operator's own): route it where that
                    # decision would send it rather than wait past Envoy's timeout.
                    log.warning("step %s held a request past the hold budget; routing it to %s", d.step, d.site)
                    d = replace(d, hold_ms=0.0)
                out = Outcome(d.site, d, features=features, parsed=out.parsed)
                break
            await asyncio.sleep(wait / 1000.0)
            held += wait
            features = replace(out.features, held_ms=held)
            d, views = self.route(features)
            out = Outcome(d.site, d, features=features, parsed=out.parsed)
        self.metrics.hold_seconds.observe(time.perf_counter() - t0)
        return out, views

    async def route_body(
        self, insp: Inspection, body: bytes, headers: Mapping[str, str], *, rewrite: bool = True,
        routed: tuple[Outcome, list[SiteView] | None] | None = None,
    ) -> Outcome:
        """The body path: decide (or take `routed`, the processor's own `route_body_now`), hold while the
        decision says so, then rewrite. The processor decides first itself when it must tell Envoy
        before a hold (override_message_timeout)."""
        out, views = routed if routed is not None else self.route_body_now(insp, body, headers)
        if out.decision.hold_ms > 0:
            out, views = await self.hold(out, views)
        if views is not None and self.rewriter is not None and rewrite:
            assert out.parsed is not None and out.features is not None
            await self._rewrite(out, insp.path, body, out.parsed, out.features, views)
        return out

    async def _rewrite(
        self,
        out: Outcome,
        path: str,
        body: bytes,
        parsed: dict,
        features: RequestFeatures,
        views: list[SiteView],
    ) -> None:
        assert self.rewriter is not None
        view = next((v for v in views if v.name == out.site), None)
        req = RewriteRequest(
            path=path, body=body, parsed=parsed, features=features, decision=out.decision,
            site=view, site_load=self._snapshot().sites.get(out.site),
        )
        deadline = self.config.compression.deadline_ms / 1000.0
        t0 = time.perf_counter()
        try:
            result = await asyncio.wait_for(self.rewriter.rewrite(req), timeout=deadline)
        except asyncio.TimeoutError:
            result = Skip("deadline")
        except Exception:
            log.exception("rewriter failed; body left unchanged")
            result = Skip("error")
        self.metrics.rewrite_seconds.observe(time.perf_counter() - t0)
        if isinstance(result, Rewrite):
            out.body = result.body
            out.headers.update(result.headers)
            self.metrics.rewrites.inc()
        else:
            out.headers.update(result.headers)
            self.metrics.rewrite_skips.labels(result.reason).inc()
