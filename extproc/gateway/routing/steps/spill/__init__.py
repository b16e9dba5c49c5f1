"""`spill` (rule, always decides): standard and batch traffic stay on the home site but for a fraction that
grows with its pressure, with hysteresis. The bands are the step's parameters; the pure math is `bands.py`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pydantic import Field, model_validator

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.framework import (
    Decision,
    RoutingContext,
    Rule,
    by_rtt,
    draw_weighted,
    fmt_p,
    has_headroom,
)
from extproc.gateway.routing.registry import StepEnv, StepParams, register
from extproc.gateway.routing.steps.spill.bands import (
    check_bands,
    legacy_policy_bands,
    spill_fraction,
    update_spill_states,
)
from extproc.gateway.routing.views import SiteView


@register("spill")
class Spill(Rule):
    """Standard and batch traffic stay on the home (closest) site, except a fraction that grows with its
    pressure (hysteresis between `spill_on` and `spill_off`), sent to less-loaded sites weighted by
    headroom. Owns the hysteresis state: it advances on every snapshot, and for each decision it is
    re-evaluated against the in-flight-corrected pressures without being stored."""

    always_decides = True

    class Params(StepParams):
        # False: every class spills like standard (the "no SLA classes" ablation).
        sla_aware: bool = True
        # Spilling starts when home's pressure reaches spill_on and stops only below spill_off
        # (hysteresis: no flapping at the threshold); the fraction grows linearly from spill_off (0) to
        # spill_full (max_spill); batch spills batch_spill_boost times more readily (capped).
        spill_on: float = Field(default=0.55, ge=0, le=1.5)
        spill_off: float = Field(default=0.45, ge=0, le=1.5)
        spill_full: float = Field(default=0.95, gt=0, le=2)
        max_spill: float = Field(default=0.9, ge=0, le=1)
        batch_spill_boost: float = Field(default=1.5, ge=1, le=10)

        @model_validator(mode="after")
        def _bands(self) -> "Spill.Params":
            check_bands(self)
            return self

    def __init__(self, name: str, params: Params, env: StepEnv) -> None:
        super().__init__(name)
        # Deprecated `policy:` spellings of the bands (read for one release; the config loader warns)
        # apply where the step's own parameters do not set them.
        legacy = legacy_policy_bands(env.config.policy)
        self.bands = params if not legacy else Spill.Params.model_validate(
            {**legacy, **params.model_dump(exclude_unset=True)})
        self.sla_aware = params.sla_aware
        self.state: dict[str, bool] = {}

    def on_snapshot(self, views: Sequence[SiteView], now: float) -> None:
        self.state = update_spill_states(views, self.state, self.bands)

    def spilling(self, ctx: RoutingContext) -> Mapping[str, bool]:
        return update_spill_states(ctx.views, self.state, self.bands)

    def site_status(self) -> Mapping[str, Mapping[str, float]]:
        return {"spilling": {site: 1.0 if on else 0.0 for site, on in self.state.items()}}

    def decide(self, ctx: RoutingContext, sites: list[SiteView]) -> Decision | None:
        ordered = by_rtt(sites, ctx.policy)
        home = ordered[0]
        sla = ctx.features.sla if self.sla_aware else SlaClass.standard
        frac = spill_fraction(home.pressure, self.spilling(ctx).get(home.name, False), sla, self.bands)
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
            chosen = draw_weighted(targets, weights, ctx.u / frac)
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
