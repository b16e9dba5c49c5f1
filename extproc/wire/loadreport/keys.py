"""Redis key and channel names shared by agents, gateways and operator commands.

Each site's reports have their own key space (`<prefix>:report:<site>:*`) and their own channel
(`<prefix>:reports:<site>`), so a Redis ACL user per site can be allowed to write exactly its own
(`deploy/redis/users.acl`): an agent's credentials cannot publish or store another site's report. The
shared channel `<prefix>:reports` is the layout before per-site channels; gateways still read it during
an upgrade, as a hint only (see `LoadMapReader`).
"""

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

    def site_reports_channel(self, site: str) -> str:
        """The site's own pub/sub channel: the same bytes as each of its key writes, for push updates."""
        return f"{self.prefix}:reports:{site}"

    @property
    def site_reports_pattern(self) -> str:
        """PSUBSCRIBE pattern of every site's channel (the gateway's ACL allows exactly this pattern)."""
        return f"{self.prefix}:reports:*"

    def site_of_reports_channel(self, channel: str) -> str | None:
        """The site whose channel this is, or None for any other channel (the shared one included)."""
        head = f"{self.prefix}:reports:"
        return channel[len(head):] if channel.startswith(head) and len(channel) > len(head) else None

    @property
    def reports_channel(self) -> str:
        """The shared reports channel of agents from before per-site channels: read during an upgrade
        only, and never trusted on its own (any writer could name any site there)."""
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
