"""The router: one active profile plus the state every profile shares (site views, in-flight counts).

Free of I/O and of the clock: the caller passes `now` and the snapshot. `aigrid serve` drives it from
the load map reader; the grid twin drives it in virtual time.

In-flight accounting: reports arrive every few hundred ms; a burst inside that window would otherwise
see the same idle snapshot and herd onto one site. Each inference request routed to a site counts as
one more running request there until the site's next report (which already includes it) resets the
count (`views.with_in_flight`). Counts from other gateway replicas sharing the map can be folded in
with `set_peer_in_flight` (they publish theirs), so N gateways do not herd either.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping

from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.request.features import RequestFeatures
from extproc.gateway.routing.framework import (
    Decision,
    Profile,
    RoutingContext,
    StepTimer,
)
from extproc.gateway.routing.registry import build_active_profile
from extproc.gateway.routing.views import GridViews, SiteView, with_in_flight

# How long a decision may reuse the site views built for an earlier one (bounds the error on report age).
VIEW_TTL_S = 0.05


def keyed_draw(key: str) -> float:
    """A uniform draw in [0, 1) from a conversation key: the same on every gateway replica."""
    h = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(h, "big") / 2.0**64


class Router:
    def __init__(
        self,
        config: GatewayConfig,
        *,
        profile: str | Profile | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.profile = profile if isinstance(profile, Profile) else build_active_profile(config, profile)
        self._rng = rng or random.Random()
        self._default = config.default_site
        self._keyed = config.routing.keyed_draw
        self.reads_body = self.profile.reads_body
        self.needs_prefix_blocks = self.profile.needs_prefix_blocks
        # Views depend on the snapshot and, through report age, on time: looked at again when the snapshot
        # object changes or after VIEW_TTL_S, not per request; and then only the sites whose report, drain
        # flag or RTT changed, or that turned stale, are made again (GridViews).
        self._grid = GridViews(config)
        self._views: list[SiteView] = []
        self._views_of: LoadSnapshot | None = None
        self._views_at = -1e18
        # Requests this gateway routed to each site since its last load report, and that report's
        # receive time, to notice the next one.
        self.sent_since_report: dict[str, int] = {}
        self._report_at: dict[str, float] = {}
        # Other replicas' counts for the same report epochs (see set_peer_in_flight).
        self._peer_in_flight: dict[str, int] = {}
        # with_in_flight's memo: per site, (view, count, corrected view) of its last correction.
        self._corrected: dict[str, tuple[SiteView, int, SiteView]] = {}
        # The current decision's corrected candidates (None until the profile asks for them).
        self._last_corrected: list[SiteView] | None = None
        self._adjust = self._correct  # bound once, not per decision

    # -- load map events ----------------------------------------------------------------------------------
    def on_snapshot(self, snap: LoadSnapshot, now: float) -> list[SiteView]:
        """A new snapshot: reset in-flight counts of sites with a new report, advance stateful steps.
        Returns the views (without in-flight correction) for gauges."""
        for name, load in snap.sites.items():
            if self._report_at.get(name) != load.updated_at:
                self._report_at[name] = load.updated_at
                self.sent_since_report[name] = 0
                self._peer_in_flight.pop(name, None)
        views = self._grid.build(snap, now)
        self.profile.on_snapshot(views, now)
        return views

    def report_epochs(self) -> Mapping[str, float]:
        """Receive time of each site's last report as this router saw it (to publish in-flight counts)."""
        return self._report_at

    def set_peer_in_flight(self, counts: Mapping[str, int]) -> None:
        """Requests other gateways sent to each site since its current report (summed over peers)."""
        self._peer_in_flight = dict(counts)

    def site_status(self) -> dict[str, dict[str, float]]:
        """Per-site state the profile's steps report for gauges (e.g. the spill step's `spilling`)."""
        return self.profile.site_status()

    def views(self, snap: LoadSnapshot, now: float) -> list[SiteView]:
        if snap is not self._views_of or now - self._views_at > VIEW_TTL_S:
            self._views = self._grid.build(snap, now)
            self._views_of, self._views_at = snap, now
        return self._views

    # -- a decision ---------------------------------------------------------------------------------------
    def route(
        self,
        features: RequestFeatures,
        snap: LoadSnapshot,
        now: float,
        timer: StepTimer | None = None,
    ) -> tuple[Decision, list[SiteView]]:
        views = self.views(snap, now)
        self._last_corrected = None
        key = features.conversation_key
        u = keyed_draw(key) if (self._keyed and key is not None) else self._rng.random()
        ctx = RoutingContext(features, views, self.config.policy, self._default, u, now)
        d = self.profile.decide(ctx, timer, self._adjust, stable_views=True)
        if d.hold_ms > 0:  # not sent anywhere yet: nothing in flight, no step's state advances
            return d, views
        if features.inference:  # a GET /v1/models puts no load on the GPUs
            self.sent_since_report[d.site] = self.sent_since_report.get(d.site, 0) + 1
        self.profile.on_decision(ctx, d)
        # The views the decision saw: the corrected candidates when the chosen site is one of them.
        corrected = self._last_corrected
        if corrected is not None:
            for v in corrected:
                if v.name == d.site:
                    return d, corrected
        return d, views

    def _correct(self, candidates: list[SiteView]) -> list[SiteView]:
        # Only the filters' survivors get the in-flight correction (see Profile.decide), and a survivor
        # whose view and count are the ones it had last time gets the same corrected view.
        self._last_corrected = c = with_in_flight(candidates, self.sent_since_report, self._peer_in_flight, self._corrected)
        return c

    def on_response(self, site: str, features: RequestFeatures, now: float) -> None:
        self.profile.on_response(site, features, now)


__all__ = ["VIEW_TTL_S", "Router", "keyed_draw"]
