"""The routing decision as one pure function: `decide(ctx)` runs the built-in profile that
`ctx.policy.strategy` names over the context, with the spill hysteresis state taken from `ctx.spilling`.

The framework itself (steps, registry, profiles, the stateful router) is in `framework.py`,
`registry.py`, `profiles.py` and `router.py`; this module keeps the one-call form that tests, the
operator table and the twin use to ask "what would this policy decide here?".
"""

from __future__ import annotations

from functools import lru_cache

from extproc.config.schema import GatewayConfig, SiteConfig
from extproc.routing.framework import Decision, Profile, RoutingContext
from extproc.routing.registry import build_profile, profile_specs

__all__ = ["Decision", "RoutingContext", "decide"]


@lru_cache(maxsize=16)
def _profile(strategy: str, policy_json: str) -> Profile:
    # A throwaway config carrying the policy: the steps read their defaults from it.
    from extproc.config.schema import PolicySettings  # noqa: PLC0415

    policy = PolicySettings.model_validate_json(policy_json)
    cfg = GatewayConfig(sites=[SiteConfig(name="x", endpoints=["127.0.0.1:1"])], policy=policy.model_copy(update={"default_site": None}))
    return build_profile(strategy, profile_specs(cfg)[strategy], cfg)


def decide(ctx: RoutingContext) -> Decision:
    """A decision with no state carried over (affinity from `features.previous_site`, spill state from
    `ctx.spilling`, an empty prefix index)."""
    p = ctx.policy
    profile = _profile(p.strategy, p.model_dump_json())
    if ctx.spilling is None:
        ctx = RoutingContext(ctx.features, ctx.views, {}, ctx.policy, ctx.default_site, ctx.u, ctx.now)
    return profile.decide(ctx)
