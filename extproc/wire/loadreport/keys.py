"""Redis key and channel names shared by agents, gateways and operator commands."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    prefix: str = "aigrid"

    def report(self, site: str, node: str) -> str:
        """Per-node key holding the latest NodeLoadReport bytes, with a TTL (a dead agent vanishes)."""
        return f"{self.prefix}:report:{site}:{node}"

    @property
    def report_pattern(self) -> str:
        return f"{self.prefix}:report:*"

    @property
    def reports_channel(self) -> str:
        """Pub/sub channel carrying the same bytes as each key write, for push updates."""
        return f"{self.prefix}:reports"

    @property
    def drained(self) -> str:
        """Set of drained site names (operator control, seen by every gateway)."""
        return f"{self.prefix}:drained"

    @property
    def control_channel(self) -> str:
        """Pub/sub channel announcing a change of the drained set."""
        return f"{self.prefix}:control"

    @property
    def in_flight_channel(self) -> str:
        """Pub/sub channel where each gateway publishes the requests it sent to each site since that
        site's last report, so replicas sharing the map count each other's bursts (no herding)."""
        return f"{self.prefix}:inflight"
