"""One routing decision with no state carried over, for tests that ask "what would this policy decide
here?": the built-in profile that the policy's (deprecated) `strategy` names, or `spill` where it names
`aigrid` or nothing (these cases are the spill policy's: affinity, realtime home, spill with hysteresis,
which `aigrid` was before the cost model), built once per policy, with the spill step's hysteresis state
and the affinity table set for the one decision.

Test-only: the product's router keeps that state itself (`extproc.gateway.routing.router`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from extproc.gateway.config.schema import GatewayConfig, PolicySettings, SiteConfig
from extproc.gateway.routing.framework import Decision, Profile, RoutingContext
from extproc.gateway.routing.registry import build_profile, profile_specs
from extproc.gateway.routing.steps.affinity import Affinity
from extproc.gateway.routing.steps.spill import Spill

# The conversation key a case with a previous site carries (the affinity table is keyed on it).
CONVERSATION = "oneshot-conversation"


@dataclass(frozen=True)
class Case:
    ctx: RoutingContext
    # The spill step's hysteresis state going into the decision (None: from nothing, re-evaluated).
    spilling: Mapping[str, bool] | None = None
    # The site this conversation used last (affinity), or None.
    previous_site: str | None = None


@lru_cache(maxsize=16)
def _profile(policy_json: str) -> Profile:
    policy = PolicySettings.model_validate_json(policy_json)
    cfg = GatewayConfig(sites=[SiteConfig(name="x", endpoints=["127.0.0.1:1"])],
                        policy=policy.model_copy(update={"default_site": None}))
    name = cfg.active_profile
    if name == "aigrid":
        name = "spill"
    return build_profile(name, profile_specs(cfg)[name], cfg)


def decide(case: Case | RoutingContext) -> Decision:
    if isinstance(case, RoutingContext):
        case = Case(case)
    ctx = case.ctx
    profile = _profile(ctx.policy.model_dump_json(exclude_unset=True))
    for step in profile.steps:
        if isinstance(step, Spill):
            step.state = dict(case.spilling or {})
        if isinstance(step, Affinity):
            step.table = type(step.table)(10, 1e9)
            if case.previous_site is not None:
                step.table.put(ctx.features.conversation_key, case.previous_site, ctx.now)
    return profile.decide(ctx)
