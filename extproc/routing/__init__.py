"""Routing policy: request features + load snapshot → site, as a pipeline of named steps (pure)."""

from extproc.routing.features import RequestFeatures, SlaClass
from extproc.routing.pipeline import Decision, RoutingContext, decide
from extproc.routing.spill import spill_fraction, update_spill_states
from extproc.routing.views import SiteView, build_views, site_pressure

__all__ = [
    "Decision",
    "RequestFeatures",
    "RoutingContext",
    "SiteView",
    "SlaClass",
    "build_views",
    "decide",
    "site_pressure",
    "spill_fraction",
    "update_spill_states",
]
