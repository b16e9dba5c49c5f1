"""Rules: steps that may decide outright; the first decision wins. Pure over (context, own state)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import BaseModel, ConfigDict, Field

from extproc.routing.affinity import AffinityTable
from extproc.routing.features import RequestFeatures, SlaClass
from extproc.routing.framework import Decision, RoutingContext, Rule, by_rtt, fallback, fmt_p, has_headroom
from extproc.routing.registry import NoParams, StepEnv, register
from extproc.routing.spill import spill_fraction, update_spill_states
from extproc.routing.views import SiteView


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


@register("affinity")
class Affinity(Rule):
    """Keep a conversation on the site it used last while that site has headroom (KV-cache reuse). The
    table is this gateway's memory (a hint): across replicas, the router's keyed draw makes the first
    placement agree (see `router.py`)."""

    class Params(_Params):
        # Conversations remembered this long, at most this many (defaults: policy.affinity_*).
        ttl_s: float | None = Field(default=None, ge=0)
        max_entries: int | None = Field(default=None, ge=0)
        # False: key on the conversation header alone (no body read; the headers-only path can use it).
        from_body: bool = True

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        pol = env.config.policy
        self.table = AffinityTable(
            pol.affinity_max_entries if params.max_entries is None else params.max_entries,
            pol.affinity_ttl_s if params.ttl_s is None else params.ttl_s,
        )
        self.reads_body = params.from_body

    def _previous(self, f: RequestFeatures, now: float) -> str | None:
        return f.previous_site if f.previous_site is not None else self.table.get(f.conversation_key, now)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        prev = self._previous(ctx.features, ctx.now)
        if prev is None:
            return None
        for s in sites:
            if s.name == prev and has_headroom(s, ctx.policy):
                return Decision(s.name, f"affinity: conversation stays on {s.name} (p={fmt_p(s.pressure)})", self.name, s.pressure)
        return None

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        self.table.put(ctx.features.conversation_key, decision.site, ctx.now)


@register("realtime")
class Realtime(Rule):
    """Realtime requests: the closest site with headroom, else the least loaded."""

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        if ctx.features.sla is not SlaClass.realtime:
            return None
        ordered = by_rtt(sites, ctx.policy)
        for s in ordered:
            if has_headroom(s, ctx.policy):
                return Decision(s.name, f"realtime: lowest RTT with headroom {s.name} ({s.rtt_ms:.1f} ms, p={fmt_p(s.pressure)})", self.name, s.pressure)
        best = min(ordered, key=lambda s: s.pressure if s.pressure is not None else 9e9)
        return Decision(best.name, f"realtime: no headroom anywhere, least loaded {best.name} (p={fmt_p(best.pressure)})", self.name, best.pressure)


@register("spill")
class Spill(Rule):
    """Standard and batch traffic stay on the home (closest) site, except a fraction that grows with its
    pressure (hysteresis between policy.spill_on and spill_off), sent to less-loaded sites weighted by
    headroom. Owns the hysteresis state: it advances on every snapshot, and for each decision it is
    re-evaluated against the in-flight-corrected pressures without being stored."""

    always_decides = True

    class Params(_Params):
        # False: every class spills like standard (the "no SLA classes" ablation).
        sla_aware: bool = True

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        self.sla_aware = params.sla_aware
        self.state: dict[str, bool] = {}
        self._policy = env.config.policy

    def on_snapshot(self, views: Sequence[SiteView], now: float) -> None:
        self.state = update_spill_states(views, self.state, self._policy)

    def spilling(self, ctx: RoutingContext) -> Mapping[str, bool]:
        if ctx.spilling is not None:
            return ctx.spilling
        return update_spill_states(ctx.views, self.state, ctx.policy)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        ordered = by_rtt(sites, ctx.policy)
        home = ordered[0]
        sla = ctx.features.sla if self.sla_aware else SlaClass.standard
        frac = spill_fraction(home.pressure, self.spilling(ctx).get(home.name, False), sla, ctx.policy)
        # Spill only to sites that have headroom and are less loaded than home.
        targets = [
            s
            for s in ordered[1:]
            if has_headroom(s, ctx.policy) and home.pressure is not None and s.pressure is not None and s.pressure < home.pressure
        ]
        label = ctx.features.sla.value
        if frac > 0 and targets and ctx.u < frac:
            # Conditional on u < frac, u/frac is again uniform on [0, 1): reuse it to pick among targets
            # weighted by their headroom, so several remote sites share the spill without herding.
            weights = [max(1e-6, ctx.policy.headroom_pressure - (s.pressure or 0.0)) for s in targets]
            r = (ctx.u / frac) * sum(weights)
            chosen = targets[-1]
            for s, w in zip(targets, weights):
                if r < w:
                    chosen = s
                    break
                r -= w
            return Decision(
                chosen.name,
                f"{label}: spill {frac:.0%} from {home.name} (p={fmt_p(home.pressure)}) to {chosen.name} (p={fmt_p(chosen.pressure)})",
                self.name,
                chosen.pressure,
                frac,
            )
        why = "home" if frac == 0 else f"home share {1 - frac:.0%}"
        if frac > 0 and not targets:
            why = "no less-loaded site to spill to"
        # "home" is the step label the metrics and the demo have always used for staying home.
        step = "home" if self.name == "spill" else f"{self.name}_home"
        return Decision(home.name, f"{label}: {why} {home.name} (p={fmt_p(home.pressure)})", step, home.pressure, frac)


@register("default_only")
class DefaultOnly(Rule):
    """Baseline: the default site takes everything it can (falls back when it is filtered out)."""

    always_decides = True

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        for s in sites:
            if s.name == ctx.default_site:
                return Decision(s.name, f"default only {s.name}", self.name, s.pressure)
        return fallback(ctx, sites, "default site filtered out")
