"""Metric names and bounded label values. Pure.

The OpenTelemetry GenAI semantic conventions name the LLM metrics; under Prometheus' naming rules the dots
become underscores, a unit of seconds becomes a `_seconds` suffix, an annotation unit like `{token}` adds
nothing, and attributes become labels with underscores. Bucket boundaries are the ones the conventions
recommend. Our own labels (`site`, `sla`) sit beside the convention's.
"""

from __future__ import annotations

import re

# The gateway is its sites' client: the conventions' client metrics (gen_ai.client.*) are what it measures,
# from the request leaving the gateway to the bytes coming back, as Envoy AI Gateway reports them.
TOKEN_USAGE = "gen_ai_client_token_usage"  # gen_ai.client.token.usage, {token}
OPERATION_DURATION = "gen_ai_client_operation_duration_seconds"  # gen_ai.client.operation.duration, s
TIME_TO_FIRST_CHUNK = "gen_ai_client_operation_time_to_first_chunk_seconds"  # ...time_to_first_chunk, s
TIME_PER_OUTPUT_CHUNK = "gen_ai_client_operation_time_per_output_chunk_seconds"  # ...time_per_output_chunk, s
# Deprecated aliases, kept for the 0.1 series (docs/observability.md, CHANGELOG.md): the same
# measurements under the server-side names and labels the first release used. Removed in 0.2.
TTFT = "gen_ai_server_time_to_first_token_seconds"  # alias of TIME_TO_FIRST_CHUNK
REQUEST_DURATION = "gen_ai_server_request_duration_seconds"  # alias of OPERATION_DURATION
TIME_PER_OUTPUT_TOKEN = "gen_ai_server_time_per_output_token_seconds"  # (last - first byte) / (tokens - 1)
DEPRECATED_ALIASES = {TTFT: TIME_TO_FIRST_CHUNK, REQUEST_DURATION: OPERATION_DURATION, TIME_PER_OUTPUT_TOKEN: TIME_PER_OUTPUT_CHUNK}

TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)

# The deprecated aliases' labels (unchanged from 0.1.0).
GENAI_LABELS = ("gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "site", "sla")
# The client metrics': the conventions' metric attributes (gen_ai.response.model: the model the response
# names; server.address / server.port: the site endpoint that answered) and ours.
CLIENT_LABELS = (
    "gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model", "gen_ai_response_model",
    "server_address", "server_port", "site", "sla",
)
# The sites speak the OpenAI API (vLLM, SGLang): the conventions' value for that flavour of telemetry.
PROVIDER = "openai"

_MODEL_OK = re.compile(r"^[A-Za-z0-9._:/@+-]{1,96}$")
OTHER = "_OTHER"


class ModelLabels:
    """The request's model as a label value, bounded: the model string comes from the client, so only the
    first `limit` distinct well-formed names get their own series; the rest share `_OTHER`."""

    def __init__(self, limit: int = 32) -> None:
        self.limit = limit
        self._seen: set[str] = set()

    def __call__(self, model: str | None) -> str:
        if not model or not _MODEL_OK.match(model):
            return OTHER
        if model in self._seen:
            return model
        if len(self._seen) >= self.limit:
            return OTHER
        self._seen.add(model)
        return model


class ServerAddresses:
    """server.address / server.port of a response, bounded by config: the site's endpoint when it has one,
    else the upstream Envoy reports it connected to when that is one of the site's endpoints (an address
    Envoy resolved from a name is not: pod IPs would make series without bound); otherwise unknown ("")."""

    def __init__(self, endpoints: dict[str, list[str]] | None = None) -> None:
        self._single: dict[str, tuple[str, str]] = {}
        self._known: dict[str, set[str]] = {}
        for site, eps in (endpoints or {}).items():
            self._known[site] = set(eps)
            if len(eps) == 1:
                self._single[site] = split_host_port(eps[0])

    def __call__(self, site: str, reported: str = "") -> tuple[str, str]:
        one = self._single.get(site)
        if one is not None:
            return one
        if reported and reported in self._known.get(site, ()):
            return split_host_port(reported)
        return "", ""


def split_host_port(hp: str) -> tuple[str, str]:
    host, _, port = hp.rpartition(":")
    return (host.strip("[]"), port) if host and port.isdigit() else ("", "")


def reason_class(step: str, reason: str) -> str:
    """A routing decision's reason as one of a few classes (the reason text itself carries numbers)."""
    if step == "fallback":
        for needle, cls in (("drained", "fallback_drained"), ("healthy", "fallback_unhealthy"), ("fresh load", "fallback_no_load")):
            if needle in reason:
                return cls
        return "fallback_other"
    if step == "realtime":
        return "no_headroom" if "no headroom" in reason else "lowest_rtt"
    if step == "home":
        if "no less-loaded" in reason:
            return "no_spill_target"
        return "home_share" if "home share" in reason else "home"
    if step in ("affinity", "spill", "least_loaded", "default_only"):
        return step
    if step == "slo_slack":
        for needle, cls in (("least violation", "slo_least_violation"), ("nearest", "slo_nearest")):
            if needle in reason:
                return cls
        return "slo_most_slack"
    return "other"
