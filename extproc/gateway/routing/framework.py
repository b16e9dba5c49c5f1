"""The routing framework: filters → rules → weighted scorers → picker, over plain data.

Shaped like the Gateway API Inference Extension / llm-d scheduler, in Python's idiom:

- a **filter** narrows the candidate sites (drained, unhealthy, unknown load, wrong model);
- a **rule** may decide outright (conversation affinity, realtime to the closest site, the spill split);
  rules are tried in order and the first decision wins;
- **scorers** give every candidate a score in [0, 1] (higher is better), summed with their weights;
- **estimators** each add one term (ms) to every candidate's predicted TTFT and TPOT for this request
  (link, queued work, own prefill, decode batch, prefill stalls; see `steps/slo/`);
- the **picker** chooses from the scored candidates (max score, weighted random, round robin), or, a
  prediction picker (`slo_slack`), from the predictions against the request's class SLO.

A profile is one such composition, named in aigrid.yaml (`routing.profiles`); see `registry.py` for how
step types are registered and `profiles.py` for the built-in ones. A stateful step owns its state and
the hooks that advance it (`on_snapshot`, `on_decision`, `on_response`); the decision methods only read
it, so a decision is a pure function of (context, candidates, the step's current state).

If a filter would leave nothing, the profile stops and falls back (the default site if it survived the
earlier filters, else the closest survivor), so a drained or unhealthy site is never chosen while a
better one exists. Every decision carries a short reason string.
"""

from __future__ import annotations

import operator
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import ClassVar

from extproc.gateway.config.schema import PolicySettings
from extproc.gateway.request.features import RequestFeatures
from extproc.gateway.routing.views import SiteView


@dataclass(frozen=True, slots=True)
class RoutingContext:
    features: RequestFeatures
    views: Sequence[SiteView]
    policy: PolicySettings
    default_site: str
    # One uniform draw in [0, 1) supplied by the caller: the split is random, the function is not. The
    # router derives it from the conversation key when there is one (see router.keyed_draw), so every
    # gateway replica makes the same choice for the same conversation.
    u: float
    # The caller's clock (seconds, monotonic), for steps with time-bounded state (affinity TTL).
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Decision:
    site: str
    reason: str
    step: str
    pressure: float | None = None
    spill_fraction: float = 0.0
    # Set by prediction pickers: this request's predicted TTFT / TPOT at the chosen site (ms; TPOT None
    # where nothing predicts it), the prompt tokens predicted not to hit its prefix cache, the class SLO
    # slack there (share of the SLO left; < 0 a predicted miss), and the term that decided.
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    uncached_tokens: int | None = None
    slack: float | None = None
    # The slack the realtime SLO would leave there, with this request's numbers (the site's stress for the
    # tightest class, whatever this request's): the compressor's keep-rate follows the lower of the two.
    site_slack: float | None = None
    term: str = ""
    # Sites whose speed was the cost model's stated default (not configured), for the metric.
    default_speed: tuple[str, ...] = ()
    # > 0: not yet. Hold the request this long and decide again (with `features.held_ms` grown by it);
    # `site` is where it would go now. A hold counts nothing in flight and advances no step's state.
    hold_ms: float = 0.0


class StepKind(str, Enum):
    filter = "filter"
    rule = "rule"
    estimator = "estimator"
    scorer = "scorer"
    picker = "picker"


class Step:
    """One named step. Subclasses set `kind`; `reads_body` says whether the step needs the parsed body
    (a profile none of whose steps does is answered in the request-headers phase, no buffering)."""

    kind: ClassVar[StepKind]
    # Per instance where a parameter decides it (affinity keyed on a header alone reads no body).
    reads_body: bool = False
    # Whether the step reads `features.prefix_blocks` (computed from the body only when some step does).
    needs_prefix_blocks: bool = False
    # Filled by the registry: the type name the step was registered under, and the instance name.
    type_name: ClassVar[str] = ""

    def __init__(self, name: str) -> None:
        self.name = name

    # Hooks (no-ops unless a step keeps state).
    def on_snapshot(self, views: Sequence[SiteView], now: float) -> None:
        """A new load snapshot (views without this gateway's in-flight correction)."""

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        """The profile's decision for a request, whichever step made it."""

    def on_response(self, site: str, features: RequestFeatures, now: float) -> None:
        """The site answered the request (called when the gateway sees responses)."""

    def site_status(self) -> Mapping[str, Mapping[str, float]]:
        """Per-site state worth a gauge, {status: {site: value}} (the spill step's `spilling`); the gateway
        exports what it knows a metric for."""
        return {}


# `Filter.request_key`'s answer for a filter whose output is not a function of its candidates and a key.
UNCACHED: Hashable = object()


class Filter(Step):
    kind = StepKind.filter
    # Reason used when this filter would leave no candidate.
    empty_reason: ClassVar[str] = "no candidate left"

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        raise NotImplementedError

    def request_key(self, ctx: RoutingContext) -> Hashable:
        """What of the request the filter's output depends on besides its candidates (`()`: nothing), when
        it is a function of those two alone; then the profile keeps the output for the current views and
        asks again only when they change (`Profile.decide`). `UNCACHED` (the default): a filter that reads
        the draw, the time or its own state."""
        return UNCACHED


class Rule(Step):
    kind = StepKind.rule
    # True when decide() never returns None: a profile may then end with this rule and no picker.
    always_decides: ClassVar[bool] = False

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        raise NotImplementedError


@dataclass(slots=True)
class Predictions:
    """One request's predicted TTFT and TPOT (ms) at each candidate, in candidate order, built term by term
    by the profile's estimators. `ttft_terms[name]` / `tpot_terms[name]` keep each term's contribution as
    a share of the class's TTFT / TPOT bound, so a picker can say which term separated the winner from the
    rest on the bound that mattered.
    `uncached` is the prompt tokens predicted to miss each site's prefix cache (the own-prefill term sets
    it; the full prompt until then). `reserved[i]`: the site's headroom is kept for realtime work, this
    request may take it only when nothing else fits."""

    ttft_ms: list[float]
    tpot_ms: list[float]
    uncached: list[int]
    reserved: list[bool]
    ttft_terms: dict[str, list[float]] = field(default_factory=dict)
    tpot_terms: dict[str, list[float]] = field(default_factory=dict)

    @classmethod
    def empty(cls, n: int, prompt_tokens: int) -> "Predictions":
        return cls([0.0] * n, [0.0] * n, [max(prompt_tokens, 0)] * n, [False] * n)

    def add(self, term: str, i: int, ttft_ms: float = 0.0, tpot_ms: float = 0.0, *, ttft_slo_ms: float,
            tpot_slo_ms: float | None) -> None:
        self.ttft_ms[i] += ttft_ms
        self.tpot_ms[i] += tpot_ms
        if ttft_ms:
            _row(self.ttft_terms, term, len(self.ttft_ms))[i] += ttft_ms / ttft_slo_ms
        if tpot_ms and tpot_slo_ms:
            _row(self.tpot_terms, term, len(self.ttft_ms))[i] += tpot_ms / tpot_slo_ms


    def add_all(self, term: str, ttft_ms: Sequence[float] | None = None, tpot_ms: Sequence[float] | None = None,
                *, ttft_slo_ms: float, tpot_slo_ms: float | None) -> None:
        """`add` for every candidate at once, one figure per candidate in order (None: no such term): the
        same sums, in fewer Python steps."""
        if ttft_ms is not None:
            self.ttft_ms[:] = map(operator.add, self.ttft_ms, ttft_ms)
            if any(ttft_ms):
                _add_row(self.ttft_terms, term, ttft_ms, ttft_slo_ms)
        if tpot_ms is not None:
            self.tpot_ms[:] = map(operator.add, self.tpot_ms, tpot_ms)
            if tpot_slo_ms and any(tpot_ms):
                _add_row(self.tpot_terms, term, tpot_ms, tpot_slo_ms)


def _add_row(rows: dict[str, list[float]], term: str, ms: Sequence[float], slo_ms: float) -> None:
    """`add`'s `row[i] += ms / slo` for every candidate whose figure is not 0 (a new row starts at 0.0)."""
    row = rows.get(term)
    if row is None:
        rows[term] = [0.0 + x / slo_ms if x else 0.0 for x in ms]
    else:
        row[:] = [r + x / slo_ms if x else r for r, x in zip(row, ms)]


def _row(rows: dict[str, list[float]], term: str, n: int) -> list[float]:
    row = rows.get(term)
    if row is None:
        row = rows[term] = [0.0] * n
    return row


class Estimator(Step):
    kind = StepKind.estimator

    def estimate(self, ctx: RoutingContext, sites: list[SiteView], pred: Predictions) -> None:
        """Add this step's term to `pred` for every candidate (in order)."""
        raise NotImplementedError


class Scorer(Step):
    kind = StepKind.scorer

    def __init__(self, name: str, weight: float = 1.0) -> None:
        super().__init__(name)
        self.weight = weight

    def score(self, ctx: RoutingContext, sites: list[SiteView]) -> list[float]:
        """One score in [0, 1] per site, in order; higher is better."""
        raise NotImplementedError


class Picker(Step):
    kind = StepKind.picker
    # True for pickers that choose from the estimators' predictions (the profile then calls pick_predicted).
    uses_predictions: ClassVar[bool] = False

    def pick(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float]) -> Decision:
        raise NotImplementedError

    def pick_predicted(self, ctx: RoutingContext, sites: list[SiteView], scores: list[float],
                       pred: Predictions) -> Decision:
        return self.pick(ctx, sites, scores)


# ---- helpers shared by steps --------------------------------------------------------------------------
def has_headroom(s: SiteView, p: PolicySettings) -> bool:
    return s.pressure is not None and s.pressure < p.headroom_pressure


def by_rtt(sites: Sequence[SiteView], p: PolicySettings) -> list[SiteView]:
    """Closest first. Sites within rtt_tolerance_ms of the closest tie, and ties go to the lower tier
    (edge, then regional, then far/remote), then by name: the order is total and stable, and measurement
    jitter cannot flip it."""
    if not sites:
        return []
    best = min(s.rtt_ms for s in sites)

    def key(s: SiteView) -> tuple[float, int, str]:
        rtt = 0.0 if s.rtt_ms <= best + p.rtt_tolerance_ms else s.rtt_ms
        return (rtt, s.role.tier, s.name)

    return sorted(sites, key=key)



def draw_weighted(sites: Sequence[SiteView], weights: Sequence[float], u: float) -> SiteView:
    """The site a uniform draw u in [0, 1) lands on when each site holds a share of [0, 1) proportional to
    its weight (weights >= 0, not all zero); the last site takes the rounding remainder."""
    r = u * sum(weights)
    for s, w in zip(sites, weights):
        if r < w:
            return s
        r -= w
    return sites[-1]


def fmt_p(x: float | None) -> str:
    return "?" if x is None else f"{x:.2f}"


def fallback(ctx: RoutingContext, left: Sequence[SiteView], why: str) -> Decision:
    names = {s.name for s in left}
    if ctx.default_site in names or not left:
        return Decision(ctx.default_site, f"{why}: default site {ctx.default_site}", "fallback")
    best = by_rtt(left, ctx.policy)[0]
    return Decision(best.name, f"{why}: default {ctx.default_site} excluded, lowest-RTT {best.name}", "fallback")


# ---- a profile ---------------------------------------------------------------------------------------
StepTimer = Callable[[str, float], None]
# Filter outputs a profile keeps for one views list (request keys are few: the models asked for).
_FILTER_CACHE_MAX = 256


@dataclass(slots=True)
class Profile:
    """A composed pipeline. Built by `registry.build_profile`, which checks that it always decides."""

    name: str
    filters: list[Filter]
    rules: list[Rule] = field(default_factory=list)
    scorers: list[Scorer] = field(default_factory=list)
    picker: Picker | None = None
    estimators: list[Estimator] = field(default_factory=list)
    # Filter outputs for the views list `_cached_of` (see decide's `stable_views`), keyed by the filters'
    # request keys up to that filter.
    _cache: dict[tuple[Hashable, ...], list[SiteView]] = field(default_factory=dict, init=False, repr=False, compare=False)
    _cached_of: Sequence[SiteView] | None = field(default=None, init=False, repr=False, compare=False)
    # The steps whose on_decision is their own, for the step list `_hooked_of`.
    _hooked: list[Step] = field(default_factory=list, init=False, repr=False, compare=False)
    _hooked_of: list[Step] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def steps(self) -> list[Step]:
        out: list[Step] = [*self.filters, *self.rules, *self.estimators, *self.scorers]
        if self.picker is not None:
            out.append(self.picker)
        return out

    @property
    def reads_body(self) -> bool:
        return any(s.reads_body for s in self.steps)

    @property
    def needs_prefix_blocks(self) -> bool:
        return any(s.needs_prefix_blocks for s in self.steps)

    def decide(self, ctx: RoutingContext, timer: StepTimer | None = None,
               adjust: Callable[[list[SiteView]], list[SiteView]] | None = None,
               stable_views: bool = False) -> Decision:
        """Run the steps; `timer(step_name, seconds)` is called per step when given (sampled metrics).
        `adjust` rewrites the candidates the filters left before the other steps see them (the router's
        in-flight correction: filters read health, drain, models and distance, not load, so correcting
        only the survivors keeps a decision's cost in the candidates, not in the grid).

        `stable_views`: the caller promises `ctx.views` is a list it never changes (a changed grid comes
        as a new list, as the router's `GridViews` gives them). The filters with a request key (the
        leading ones, up to the first without) then run once per views list and key, and later decisions
        reuse their output: the steps never change the lists they are given."""
        clock = time.perf_counter
        if stable_views and isinstance(ctx.views, list):
            if ctx.views is not self._cached_of:
                self._cache.clear()
                self._cached_of = ctx.views
            cache: dict[tuple[Hashable, ...], list[SiteView]] | None = self._cache
            candidates = ctx.views
        else:
            cache = None
            candidates = list(ctx.views)
        key: tuple[Hashable, ...] = ()
        for f in self.filters:
            t0 = clock() if timer else 0.0
            if cache is not None and (k := f.request_key(ctx)) is not UNCACHED:
                key = (*key, k)
                narrowed = cache.get(key)
                if narrowed is None:
                    narrowed = f.filter(ctx, candidates)
                    if len(cache) >= _FILTER_CACHE_MAX:  # keys may be client-chosen (the model)
                        cache.clear()
                    cache[key] = narrowed
            else:
                cache = None
                narrowed = f.filter(ctx, candidates)
            if timer:
                timer(f.name, clock() - t0)
            if not narrowed:
                return fallback(ctx, candidates, f.empty_reason)
            candidates = narrowed
        if adjust is not None:
            candidates = adjust(candidates)
        for r in self.rules:
            t0 = clock() if timer else 0.0
            d = r.decide(ctx, candidates)
            if timer:
                timer(r.name, clock() - t0)
            if d is not None:
                return d
        if self.picker is None:  # only when the last rule always decides (checked at build)
            return fallback(ctx, candidates, "no step decided")  # pragma: no cover
        pred = None
        if self.estimators:
            pred = Predictions.empty(len(candidates), ctx.features.prompt_tokens)
            for e in self.estimators:
                t0 = clock() if timer else 0.0
                e.estimate(ctx, candidates, pred)
                if timer:
                    timer(e.name, clock() - t0)
        totals = [0.0] * len(candidates)
        for sc in self.scorers:
            t0 = clock() if timer else 0.0
            for i, v in enumerate(sc.score(ctx, candidates)):
                totals[i] += sc.weight * v
            if timer:
                timer(sc.name, clock() - t0)
        t0 = clock() if timer else 0.0
        if pred is not None and self.picker.uses_predictions:
            d = self.picker.pick_predicted(ctx, candidates, totals, pred)
        else:
            d = self.picker.pick(ctx, candidates, totals)
        if timer:
            timer(self.picker.name, clock() - t0)
        return d

    def on_snapshot(self, views: Sequence[SiteView], now: float) -> None:
        for s in self.steps:
            s.on_snapshot(views, now)

    def on_decision(self, ctx: RoutingContext, decision: Decision) -> None:
        # Only the steps that keep state: the others' hook is Step's no-op (a call each, per decision).
        steps = self.steps
        if self._hooked_of != steps:
            self._hooked = [s for s in steps if type(s).on_decision is not Step.on_decision]
            self._hooked_of = steps
        for s in self._hooked:
            s.on_decision(ctx, decision)

    def on_response(self, site: str, features: RequestFeatures, now: float) -> None:
        for s in self.steps:
            s.on_response(site, features, now)

    def site_status(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for s in self.steps:
            for status, per_site in s.site_status().items():
                out.setdefault(status, {}).update(per_site)
        return out
