"""The one vocabulary of site roles, shared by the gateway's config, its routing, the twin's scenarios and
the local stack: adding a role is one member here (with its tier) plus its tests.

A role says where a site sits in the carrier's network; its tier breaks RTT ties in routing (closer tiers
first) and orders failover. `remote` is the original name for any non-edge site and stays accepted (same
tier as `far`).
"""

from __future__ import annotations

from enum import Enum


class SiteRole(str, Enum):
    edge = "edge"
    regional = "regional"
    far = "far"
    remote = "remote"

    @property
    def tier(self) -> int:
        """0 is closest to the user; equal tiers are equally far."""
        return _TIER[self]


_TIER: dict[SiteRole, int] = {SiteRole.edge: 0, SiteRole.regional: 1, SiteRole.far: 2, SiteRole.remote: 2}
