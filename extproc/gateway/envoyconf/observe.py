"""The `observability:` settings' share of the rendered Envoy config. Pure: edits the HTTP connection
manager dict `render.py` built, adding only what the settings ask for (nothing when all are off).

- usage via access log: a Lua filter after the routing filter (it reads usage from the response tail, see
  usage_lua.py) and a gRPC access log to `aigrid serve`; via ext_proc: a second ext_proc filter in
  observability mode. Either way it sits after the routing filter, so in the response direction it sees
  the upstream's bytes before anything is stripped.
- client headers: `response_headers_to_add` copying the request headers the processor set (`%REQ()%`): no
  processor round trip on the response path; an absent request header adds nothing.
- client-sent copies of the headers the gateway sets are removed by the early header mutation.
- the JSON access log gets request id, decision, model, token fields.
"""

from __future__ import annotations

from typing import Any

from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.envoyconf.usage_lua import NAMESPACE as USAGE_NS
from extproc.gateway.envoyconf.usage_lua import SOURCE as USAGE_LUA
from extproc.gateway.observe.request import UPSTREAM_ATTRIBUTE
from extproc.wire.contract import (
    COMPRESSION_HEADER,
    DECISION_HEADER,
    OBS_HEADER,
    OVERHEAD_HEADER,
    SITE_HEADER,
)

OBSERVE_STAT_PREFIX = "aigrid_observe"
# Request headers the gateway sets that must never come from the client: they reach the observer, the
# access log and, when configured, the client's response headers.
GATEWAY_SET_HEADERS = (OBS_HEADER, COMPRESSION_HEADER, OVERHEAD_HEADER)
# client_headers entry → (response header, the request header it is copied from).
CLIENT_HEADERS = {
    "site": (SITE_HEADER, SITE_HEADER),
    "decision": (DECISION_HEADER, DECISION_HEADER),
    "compression": (COMPRESSION_HEADER, COMPRESSION_HEADER),
    "overhead": (OVERHEAD_HEADER, OVERHEAD_HEADER),
}
EXT_PROC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor"


def observe_filter(cluster: str) -> dict[str, Any]:
    """Observability mode ("send and go"): Envoy never waits for this filter's processor."""
    return {
        "name": "aigrid.observe",
        "typed_config": {
            "@type": EXT_PROC_TYPE,
            "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
            "failure_mode_allow": True,
            "observability_mode": True,
            "stat_prefix": OBSERVE_STAT_PREFIX,
            # The upstream host that answered, for server.address / server.port of a multi-endpoint site.
            "response_attributes": [UPSTREAM_ATTRIBUTE],
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                "response_body_mode": "STREAMED",
                "response_trailer_mode": "SKIP",
            },
        },
    }


def usage_lua_filter() -> dict[str, Any]:
    return {
        "name": "envoy.filters.http.lua",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.lua.v3.Lua",
            "default_source_code": {"inline_string": USAGE_LUA},
        },
    }


def usage_access_log(cluster: str) -> dict[str, Any]:
    """One entry per request to `aigrid serve`'s AccessLogService, batched: usage (the Lua filter's
    dynamic metadata), Envoy's timings, and the request headers the gateway set."""
    return {
        "name": "envoy.access_loggers.http_grpc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.grpc.v3.HttpGrpcAccessLogConfig",
            "common_config": {
                "log_name": "aigrid_usage",
                "transport_api_version": "V3",
                "grpc_service": {"envoy_grpc": {"cluster_name": cluster}},
                # Few messages for many requests; the metrics lag by at most this.
                "buffer_flush_interval": "0.25s",
                "buffer_size_bytes": 65536,
            },
            "additional_request_headers_to_log": [OBS_HEADER, SITE_HEADER, COMPRESSION_HEADER],
        },
    }


def client_response_headers(cfg: GatewayConfig) -> list[dict[str, Any]]:
    out = []
    for key in cfg.observability.client_headers:
        resp_name, req_name = CLIENT_HEADERS[key]
        out.append({"header": {"key": resp_name, "value": f"%REQ({req_name})%"}, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"})
    return out


ACCESS_LOG_FIELDS = {
    "request_id": "%REQ(X-REQUEST-ID)%",
    "decision": f"%REQ({DECISION_HEADER})%",
    # Written by the processor (routing filter's dynamic metadata, namespace "aigrid").
    "model": "%DYNAMIC_METADATA(aigrid:model)%",
    "prompt_tokens_est": "%DYNAMIC_METADATA(aigrid:prompt_tokens_est)%",
    "compression": f"%REQ({COMPRESSION_HEADER})%",
    "bytes_sent": "%BYTES_SENT%",
    # Written by the usage Lua filter (observability.usage with usage_via access_log).
    "prompt_tokens": f"%DYNAMIC_METADATA({USAGE_NS}:prompt_tokens)%",
    "completion_tokens": f"%DYNAMIC_METADATA({USAGE_NS}:completion_tokens)%",
}


def apply_observability(hcm: dict[str, Any], cfg: GatewayConfig, cluster: str) -> None:
    o = cfg.observability
    if o.usage or o.client_headers:
        muts = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
        muts.extend({"remove": h} for h in GATEWAY_SET_HEADERS)
    if o.client_headers:
        hcm["route_config"]["virtual_hosts"][0]["response_headers_to_add"] = client_response_headers(cfg)
    filters = hcm["http_filters"]
    routing = next(f for f in filters if f["typed_config"].get("@type") == EXT_PROC_TYPE)
    logs: list[dict[str, Any]] = []
    if o.usage:
        at = filters.index(routing) + 1
        filters.insert(at, usage_lua_filter() if o.usage_via == "access_log" else observe_filter(cluster))
        if o.usage_via == "access_log":
            logs.append(usage_access_log(cluster))
    if cfg.envoy.access_log:
        # The processor's model and prompt estimate arrive as dynamic metadata: let them in.
        # (Merged into what the trust settings may have set there: JWT claims forwarded to the processor.)
        routing["typed_config"].setdefault("metadata_options", {})["receiving_namespaces"] = {"untyped": ["aigrid"]}
        for log in hcm.get("access_log", []):
            fmt = log["typed_config"].get("log_format", {}).get("json_format")
            if fmt is not None:
                fmt.update(ACCESS_LOG_FIELDS)
    if logs:
        hcm["access_log"] = [*logs, *hcm.get("access_log", [])]
