"""One site of a simulated grid, the one model the twin's scenarios, the local stack (`aigrid up`, the demo)
and the scale study share: what GPUs it has, where it sits (role, RTT), and how the gateway is told about
it. The simulator process's own settings (port, jitter, validity bounds) are `SimSiteConfig`."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from extproc.wire.contract import SITE_NAME
from extproc.wire.sites import SiteRole


class GridSite(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=SITE_NAME.pattern)
    role: SiteRole = SiteRole.remote
    gpu: str = "H100"
    model: str = "llama-3.1-8b"
    gpus_per_replica: int = Field(default=1, ge=1, le=16)
    replicas: int = Field(default=1, ge=1, le=256)
    # Round trip gateway <-> site (ms): what the gateway is configured with.
    rtt_ms: float = Field(default=1.0, ge=0, le=2000)
    # The simulated link's one-way delay (ms), applied to the request and again to the response; None:
    # half the round trip.
    link_delay_ms: float | None = Field(default=None, ge=0, le=1000)
    # Running requests at which the site counts as full (the gateway's `sites[].running_capacity`).
    running_capacity: int = Field(default=64, ge=1)
    # One request's prefill speed (tokens/s) the gateway is told (`sites[].prefill_tokens_per_s`); None:
    # the simulator's roofline for this GPU and model (see the twin's adapter).
    prefill_tokens_per_s: float | None = Field(default=None, gt=0)

    @property
    def one_way_ms(self) -> float:
        return self.rtt_ms / 2.0 if self.link_delay_ms is None else self.link_delay_ms

    def gateway_site(self, endpoints: list[str], **extra: Any) -> dict[str, Any]:
        """This site as an aigrid.yaml `sites[]` entry (a mapping, validated where the config is loaded)."""
        out: dict[str, Any] = {"name": self.name, "role": self.role.value, "endpoints": endpoints,
                               "rtt_ms": self.rtt_ms, "running_capacity": self.running_capacity}
        if self.prefill_tokens_per_s is not None:
            out["prefill_tokens_per_s"] = self.prefill_tokens_per_s
        return {**out, **extra}
