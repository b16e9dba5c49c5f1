"""The gateway's request logic, free of gRPC: inspect → features → route → (rewrite). State lives here
(spill hysteresis, conversation affinity); every decision is delegated to the pure modules."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from extproc.config.schema import GatewayConfig
from extproc.loadmap.model import LoadSnapshot
from extproc.request.openai import Inspection, body_features, inspect_headers, parse_json_body
from extproc.rewrite import BodyRewriter, Rewrite, RewriteRequest, Skip
from extproc.routing.affinity import AffinityTable
from extproc.routing.features import RequestFeatures, SlaClass
from extproc.routing.pipeline import Decision, RoutingContext, decide
from extproc.routing.spill import update_spill_states
from extproc.routing.views import SiteView, build_views, with_in_flight
from extproc.server.metrics import GatewayMetrics
from extproc.trust.sla import SlaSource, headers_read, resolve_sla, rule_from_settings

log = logging.getLogger(__name__)

SITE_HEADER = "x-aigrid-site"
# How long a request may reuse the site views built for an earlier one (bounds the error on report age).
VIEW_TTL_S = 0.05
DECISION_HEADER = "x-aigrid-decision"


@dataclass(slots=True)
class Outcome:
    """What to tell Envoy: the site, and a new body when the rewriter produced one."""

    site: str
    decision: Decision
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)


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
    ) -> None:
        self.config = config
        self._snapshot = snapshot_source
        self.rewriter = rewriter
        self.metrics = metrics or GatewayMetrics()
        self._clock = clock
        self._rng = rng or random.Random()
        self.spilling: dict[str, bool] = {}
        self.affinity = AffinityTable(config.policy.affinity_max_entries, config.policy.affinity_ttl_s)
        self._default = config.default_site
        # Who may set the SLA class (extproc.trust): never the client's own x-aigrid-priority by default.
        self.trust = rule_from_settings(config.trust)
        self.wants_jwt = self.trust.source is SlaSource.jwt
        # Headers the request path reads (everything else is never decoded).
        self.wanted_headers = frozenset(
            {":method", ":path", "content-type", "content-encoding", "content-length",
             config.gateway.conversation_header.lower()}
        ) | headers_read(self.trust)
        # Views depend on the snapshot and, through report age, on time: rebuilt when the snapshot object
        # changes or after VIEW_TTL_S, not per request.
        self._views: list[SiteView] = []
        self._views_of: LoadSnapshot | None = None
        self._views_at = -1e18
        self._decision_counters: dict[tuple[str, str, str], object] = {}
        # Requests routed to each site since its last load report (see routing.views.with_in_flight),
        # and that report's receive time, to notice the next one.
        self._sent_since_report: dict[str, int] = {}
        self._report_at: dict[str, float] = {}

    # -- load map events ----------------------------------------------------------------------------------
    def on_snapshot(self, snap: LoadSnapshot) -> None:
        """Called by the map reader on every change: advance the spill hysteresis, refresh gauges."""
        for name, load in snap.sites.items():
            if self._report_at.get(name) != load.updated_at:
                self._report_at[name] = load.updated_at
                self._sent_since_report[name] = 0
        views = build_views(self.config, snap, self._clock())
        self.spilling = update_spill_states(views, self.spilling, self.config.policy)
        m = self.metrics
        m.redis_connected.set(1 if snap.connected else 0)
        for v in views:
            m.site_pressure.labels(v.name).set(-1 if v.pressure is None else v.pressure)
            m.site_drained.labels(v.name).set(1 if v.drained else 0)
            m.site_spilling.labels(v.name).set(1 if self.spilling.get(v.name) else 0)

    # -- routing ------------------------------------------------------------------------------------------
    def views(self, now: float) -> list[SiteView]:
        snap = self._snapshot()
        if snap is not self._views_of or now - self._views_at > VIEW_TTL_S:
            self._views = build_views(self.config, snap, now)
            self._views_of, self._views_at = snap, now
        return self._views

    def _count_decision(self, site: str, step: str, sla: str) -> None:
        key = (site, step, sla)
        child = self._decision_counters.get(key)
        if child is None:
            child = self._decision_counters[key] = self.metrics.decisions.labels(site, step, sla)
        child.inc()  # type: ignore[attr-defined]

    def route(self, features: RequestFeatures) -> tuple[Decision, list[SiteView]]:
        now = self._clock()
        views = self.views(now)
        spilling = self.spilling
        if any(self._sent_since_report.values()):
            views = with_in_flight(views, self._sent_since_report)
            # The hysteresis state moves with the in-flight pressure too, for this decision only; the
            # stored state advances on reports.
            spilling = update_spill_states(views, self.spilling, self.config.policy)
        if features.conversation_key is not None:
            prev = self.affinity.get(features.conversation_key, now)
            if prev is not None:
                features = RequestFeatures(
                    features.prompt_tokens, features.model, features.stream, features.sla,
                    features.conversation_key, prev, features.parsed,
                )
        ctx = RoutingContext(features, views, spilling, self.config.policy, self._default, self._rng.random())
        d = decide(ctx)
        if features.parsed:  # inference requests only: a GET /v1/models puts no load on the GPUs
            self._sent_since_report[d.site] = self._sent_since_report.get(d.site, 0) + 1
        self.affinity.put(features.conversation_key, d.site, now)
        self._count_decision(d.site, d.step, features.sla.value)
        return d, views

    def inspect(self, headers: Mapping[str, str], jwt_payload: Mapping[str, object] | None = None) -> Inspection:
        insp = inspect_headers(headers, self.config.gateway.max_body_bytes)
        sla = resolve_sla(self.trust, headers, jwt_payload)
        return insp if insp.sla is sla else dataclasses.replace(insp, sla=sla)

    def route_unparsed(self, sla: SlaClass, reason: str) -> Outcome:
        """A request whose body we do not look at: routed on load alone, body untouched."""
        self.metrics.passthrough.labels(reason).inc()
        d, _ = self.route(RequestFeatures(sla=sla, parsed=False))
        return Outcome(d.site, d)

    async def route_body(
        self, insp: Inspection, body: bytes, headers: Mapping[str, str], *, rewrite: bool = True
    ) -> Outcome:
        parsed = parse_json_body(body)
        if parsed is None:
            return self.route_unparsed(insp.sla, "invalid_json")
        features = body_features(
            insp.path, parsed, insp.sla, headers.get(self.config.gateway.conversation_header)
        )
        self.metrics.prompt_tokens_before.inc(features.prompt_tokens)
        d, views = self.route(features)
        out = Outcome(d.site, d)
        if self.rewriter is not None and rewrite:
            await self._rewrite(out, insp.path, body, parsed, features, views)
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
