"""Filters: narrow the candidate sites. Pure over the views."""

from __future__ import annotations

from collections.abc import Hashable

from extproc.gateway.routing.framework import Filter, RoutingContext
from extproc.gateway.routing.registry import NoParams, StepEnv, register
from extproc.gateway.routing.views import SiteView


@register("not_drained")
class NotDrained(Filter):
    """Drop sites an operator drained (`aigrid site drain`)."""

    empty_reason = "all sites drained"

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        return [s for s in sites if not s.drained]

    def request_key(self, ctx: RoutingContext) -> Hashable:
        return ()


@register("not_unhealthy")
class NotUnhealthy(Filter):
    """Drop sites known to be unhealthy; unknown health may still be fine (Envoy's checks decide)."""

    empty_reason = "no healthy site"

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        return [s for s in sites if s.healthy is not False]

    def request_key(self, ctx: RoutingContext) -> Hashable:
        return ()


@register("known_load")
class KnownLoad(Filter):
    """Drop sites without a fresh load report (older than policy.stale_after_s)."""

    empty_reason = "no fresh load data"

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        return [s for s in sites if s.known]

    def request_key(self, ctx: RoutingContext) -> Hashable:
        return ()


@register("serves_model")
class ServesModel(Filter):
    """Keep the sites that serve the request's model. A site with no model list (none configured, none
    reported) is taken to serve any; a request naming no model passes everywhere. When no site serves
    the model the gateway answers 404 itself (see `Gateway`), so this filter never empties the set."""

    empty_reason = "no site serves the model"
    reads_body = True

    def __init__(self, name: str, params: NoParams, env: StepEnv) -> None:
        super().__init__(name)

    def filter(self, ctx: RoutingContext, sites: list[SiteView]) -> list[SiteView]:
        model = ctx.features.model
        if model is None:
            return sites
        return [s for s in sites if not s.models or model in s.models]

    def request_key(self, ctx: RoutingContext) -> Hashable:
        return ctx.features.model
