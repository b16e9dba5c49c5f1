"""Routing: request features + load snapshot → site, as a profile of named steps (pure; `docs/routing.md`).

`framework.py` (the step kinds and the runner), `registry.py` (registration and building, with checked
parameters), `steps/` (one module or package per built-in step), `profiles.py` (the built-in profiles),
`views.py` (one request's view of each site), `router.py` (the state every profile shares)."""

from extproc.gateway.routing.framework import Decision, RoutingContext
from extproc.gateway.routing.views import SiteView, build_views, site_pressure

__all__ = ["Decision", "RoutingContext", "SiteView", "build_views", "site_pressure"]
