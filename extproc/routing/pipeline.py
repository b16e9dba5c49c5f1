"""The routing decision: filter → pick, a pipeline of small named steps over plain data. Pure.

Filters narrow the candidate sites (drained, unhealthy, unknown load). If a filter would leave nothing,
the pipeline stops and falls back (default site, or the best of what is left) with a reason that says so.
Pickers are tried in order; the first that returns a decision wins. Each decision carries a short reason
string (it goes to logs, metrics and the `x-aigrid-decision` header).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from extproc.config.schema import PolicySettings, SiteRole
from extproc.routing.features import RequestFeatures, SlaClass
from extproc.routing.spill import spill_fraction
from extproc.routing.views import SiteView


@dataclass(frozen=True, slots=True)
class RoutingContext:
    features: RequestFeatures
    views: Sequence[SiteView]
    # Hysteresis state per site (spill.update_spill_states), kept by the caller between snapshots.
    spilling: Mapping[str, bool]
    policy: PolicySettings
    default_site: str
    # One uniform draw in [0, 1) supplied by the caller: the split is random, the function is not.
    u: float


@dataclass(frozen=True, slots=True)
class Decision:
    site: str
    reason: str
    step: str
    pressure: float | None = None
    spill_fraction: float = 0.0


Filter = Callable[[RoutingContext, list[SiteView]], list[SiteView]]
Picker = Callable[[RoutingContext, list[SiteView]], Decision | None]


# ---- filters ---------------------------------------------------------------------------------------------
def not_drained(ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
    return [s for s in sites if not s.drained]


def not_unhealthy(ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
    # Known-unhealthy only: a site with unknown health may still be fine, Envoy's health checks decide.
    return [s for s in sites if s.healthy is not False]


def known_load(ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
    return [s for s in sites if s.known]


FILTERS: tuple[tuple[str, Filter], ...] = (
    ("not_drained", not_drained),
    ("not_unhealthy", not_unhealthy),
    ("known_load", known_load),
)


# ---- pickers ---------------------------------------------------------------------------------------------
def _has_headroom(s: SiteView, p: PolicySettings) -> bool:
    return s.pressure is not None and s.pressure < p.headroom_pressure


def _by_rtt(sites: list[SiteView], p: PolicySettings) -> list[SiteView]:
    """Closest first. Sites within rtt_tolerance_ms of the closest tie, and ties go to the edge role, then
    by name: the order is total and stable, and measurement jitter cannot flip it."""
    if not sites:
        return []
    best = min(s.rtt_ms for s in sites)

    def key(s: SiteView) -> tuple[float, int, str]:
        rtt = 0.0 if s.rtt_ms <= best + p.rtt_tolerance_ms else s.rtt_ms
        return (rtt, 0 if s.role is SiteRole.edge else 1, s.name)

    return sorted(sites, key=key)


def _p(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def affinity(ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
    prev = ctx.features.previous_site
    if prev is None:
        return None
    for s in sites:
        if s.name == prev and _has_headroom(s, ctx.policy):
            return Decision(s.name, f"affinity: conversation stays on {s.name} (p={_p(s.pressure)})", "affinity", s.pressure)
    return None


def realtime_lowest_rtt(ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
    if ctx.features.sla is not SlaClass.realtime:
        return None
    ordered = _by_rtt(sites, ctx.policy)
    for s in ordered:
        if _has_headroom(s, ctx.policy):
            return Decision(s.name, f"realtime: lowest RTT with headroom {s.name} ({s.rtt_ms:.1f} ms, p={_p(s.pressure)})", "realtime", s.pressure)
    best = min(ordered, key=lambda s: s.pressure if s.pressure is not None else 9e9)
    return Decision(best.name, f"realtime: no headroom anywhere, least loaded {best.name} (p={_p(best.pressure)})", "realtime", best.pressure)


def spill_split(ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
    ordered = _by_rtt(sites, ctx.policy)
    home = ordered[0]
    frac = spill_fraction(home.pressure, ctx.spilling.get(home.name, False), ctx.features.sla, ctx.policy)
    # Spill only to sites that have headroom and are less loaded than home.
    targets = [
        s
        for s in ordered[1:]
        if _has_headroom(s, ctx.policy) and home.pressure is not None and s.pressure is not None and s.pressure < home.pressure
    ]
    sla = ctx.features.sla.value
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
            f"{sla}: spill {frac:.0%} from {home.name} (p={_p(home.pressure)}) to {chosen.name} (p={_p(chosen.pressure)})",
            "spill",
            chosen.pressure,
            frac,
        )
    why = "home" if frac == 0 else f"home share {1 - frac:.0%}"
    if frac > 0 and not targets:
        why = "no less-loaded site to spill to"
    return Decision(home.name, f"{sla}: {why} {home.name} (p={_p(home.pressure)})", "home", home.pressure, frac)


def least_loaded(ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
    """Baseline strategy: what today's load-aware routers do — the lowest pressure, whatever the class."""
    best = min(_by_rtt(sites, ctx.policy), key=lambda s: s.pressure if s.pressure is not None else 9e9)
    return Decision(best.name, f"least loaded {best.name} (p={_p(best.pressure)})", "least_loaded", best.pressure)


def default_only(ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
    """Baseline strategy: one site (the default) takes everything it can."""
    for s in sites:
        if s.name == ctx.default_site:
            return Decision(s.name, f"default only {s.name}", "default_only", s.pressure)
    return _fallback(ctx, sites, "default site filtered out")


PICKERS: tuple[tuple[str, Picker], ...] = (
    ("affinity", affinity),
    ("realtime", realtime_lowest_rtt),
    ("spill", spill_split),
)

# policy.strategy → pickers. "aigrid" is the product; the other two are the baselines the demo compares
# it with, kept in the same pipeline so the comparison differs in the picking alone.
STRATEGIES: dict[str, tuple[tuple[str, Picker], ...]] = {
    "aigrid": PICKERS,
    "least_loaded": (("least_loaded", least_loaded),),
    "default_only": (("default_only", default_only),),
}


# ---- the pipeline ----------------------------------------------------------------------------------------
def _fallback(ctx: RoutingContext, left: list[SiteView], why: str) -> Decision:
    names = {s.name for s in left}
    if ctx.default_site in names or not left:
        return Decision(ctx.default_site, f"{why}: default site {ctx.default_site}", "fallback")
    best = _by_rtt(left, ctx.policy)[0]
    return Decision(best.name, f"{why}: default {ctx.default_site} excluded, lowest-RTT {best.name}", "fallback")


_EMPTY_REASON = {
    "not_drained": "all sites drained",
    "not_unhealthy": "no healthy site",
    "known_load": "no fresh load data",
}


def decide(ctx: RoutingContext) -> Decision:
    candidates = list(ctx.views)
    for name, f in FILTERS:
        narrowed = f(ctx, candidates)
        if not narrowed:
            # Fall back among the sites that passed the earlier filters, so a drained or unhealthy site
            # is never chosen while a better one exists.
            return _fallback(ctx, candidates, _EMPTY_REASON[name])
        candidates = narrowed
    for _, pick in STRATEGIES[ctx.policy.strategy]:
        d = pick(ctx, candidates)
        if d is not None:
            return d
    raise AssertionError("the last picker of every strategy always decides")  # pragma: no cover
