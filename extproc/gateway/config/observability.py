"""`observability:` in aigrid.yaml (see docs/observability.md). Everything is off by default. It lives in the
config layer, below everything that reads it (extproc.gateway.observe, the server, the Envoy renderer)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

ClientHeader = Literal["site", "decision", "compression", "overhead"]


class ObservabilitySettings(BaseModel):
    # A typo in a key must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Count token usage, time to first token and durations from responses, per site, model and SLA class.
    usage: bool = False
    # How the response reaches the gateway. "access_log": a Lua filter in Envoy reads usage from the
    # response's tail into dynamic metadata, and Envoy's gRPC access log streams one entry per request to
    # `aigrid serve`, batched (timings are Envoy's own). "ext_proc": a second ext_proc filter in
    # observability mode sends every response chunk to the gateway (a gRPC message per chunk).
    usage_via: Literal["access_log", "ext_proc"] = "access_log"
    # For streams that did not ask for usage (no stream_options.include_usage), ask for it and strip the
    # extra usage chunk before the client sees it: in Envoy's Lua filter (access_log), or in the routing
    # filter with a blocking round trip per response chunk of those streams (ext_proc). Needs `usage`.
    inject_stream_usage: bool = False
    # Decision headers copied onto responses to the client. Off by default: an untrusted listener should
    # not learn site names, load or the gateway's reasons.
    client_headers: list[ClientHeader] = Field(default_factory=list)
    # Distinct request-model label values before the rest share "_OTHER" (the model string is client input).
    max_model_labels: int = Field(default=32, ge=1, le=1000)
    # OTLP/HTTP traces endpoint (e.g. http://127.0.0.1:4318/v1/traces): one span per decision. Needs the
    # `otel` extra (opentelemetry-sdk); empty disables.
    otlp_traces_endpoint: str = ""

    @model_validator(mode="after")
    def _needs_usage(self) -> "ObservabilitySettings":
        if self.inject_stream_usage and not self.usage:
            raise ValueError("inject_stream_usage needs usage: true (usage is counted on the response side)")
        if len(set(self.client_headers)) != len(self.client_headers):
            raise ValueError("client_headers: each header at most once")
        return self
