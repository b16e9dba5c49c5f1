"""The standalone Envoy config (`aigrid envoy-config`) with the stat names Envoy Gateway and Istio give the
same things, so that a real Envoy exports the series a Prometheus sees under each ingress. Only names
change: the clusters, routes and filters stay what the gateway rendered.

Where the names come from (read in each project's source at the pinned release):
- Envoy Gateway v1.9.0: a route rule with fallback backends is one cluster named after the rule,
  `httproute/<ns>/<route>/rule/<index>` (internal/gatewayapi/helpers.go irRouteDestinationName); the HTTP
  connection manager's stat prefix is `http-<port>` (internal/xds/translator/listener.go hcmStatPrefix);
  the ext_proc filter it builds sets no stat prefix (internal/xds/translator/extproc.go); its bootstrap
  keeps Envoy's default tags (internal/xds/bootstrap/bootstrap.yaml.tpl).
- Istio 1.30.3: a cluster's alt_stat_name is `outbound|<port>||<host>;` and a gateway listener's HCM stat
  prefix `outbound_<listener>;` (pilot/pkg/networking/util DelimitedStatsPrefix, core/gateway.go); the
  bootstrap replaces Envoy's default tags with its own and keeps only the stats its matcher includes:
  the required prefixes/suffixes/regex plus the pod's proxyStatsMatcher (pkg/bootstrap/config.go,
  tools/packaging/common/envoy_bootstrap.json). The EnvoyFilter of deploy/istio names the ext_proc
  filter's stats `aigrid` as the standalone Envoy does.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

# Istio 1.30.3 bootstrap stats_tags (tools/packaging/common/envoy_bootstrap.json), the fixed ones.
ISTIO_STATS_TAGS = [
    {"tag_name": "cluster_name", "regex": r"^cluster(\.(.+);)"},
    {"tag_name": "http_conn_manager_prefix", "regex": r"^http\.(((?:[_.[:digit:]\w]*|[_\[\]aAbBcCdDeEfF[:digit:]\w\:]*));\.)"},
    {"tag_name": "thread_name", "regex": r"^server(\.(.+))\.watchdog"},
    {"tag_name": "tcp_prefix", "regex": r"^tcp\.((.*?)\.)\w+?$"},
    {"tag_name": "response_code", "regex": r"_rq(_(\d{3}))$"},
    {"tag_name": "response_code_class", "regex": r"_rq(_(\dxx))$"},
    {"tag_name": "http_conn_manager_listener_prefix", "regex": r"^listener(?=\.).*?\.http\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "listener_address", "regex": r"^listener\.(((?:[_.[:digit:]]*|[_\[\]aAbBcCdDeEfF[:digit:]]*))\.)"},
    {"tag_name": "cache", "regex": r"(cache\.(.+?)\.)"},
    {"tag_name": "component", "regex": r"(component\.(.+?)\.)"},
    {"tag_name": "tag", "regex": r"(tag\.(.+?);\.)"},
]
# pkg/bootstrap/config.go: what Istio always includes, before the pod's proxyStatsMatcher.
ISTIO_REQUIRED_PREFIXES = ["reporter=", "cluster_manager", "listener_manager", "server", "cluster.xds-grpc", "wasm"]
ISTIO_REQUIRED_REGEXES = [r"vhost\..*\.route\..*"]


def _rename(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _rename(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, names) for v in node]
    return names.get(node, node) if isinstance(node, str) else node


def _hcms(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    return [f["typed_config"] for listener in cfg["static_resources"]["listeners"] for fc in listener["filter_chains"]
            for f in fc["filters"] if f["name"] == "envoy.filters.network.http_connection_manager"]


def _routing_ext_proc(hcm: dict[str, Any]) -> dict[str, Any]:
    return next(f["typed_config"] for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")


def as_envoy_gateway(envoy_yaml: str, sites: list[str], port: int = 10080) -> str:
    cfg = yaml.safe_load(envoy_yaml)
    cfg = _rename(cfg, {f"site_{s}": f"httproute/aigrid/aigrid/rule/{i}" for i, s in enumerate(sites)})
    for hcm in _hcms(cfg):
        hcm["stat_prefix"] = f"http-{port}"
        _routing_ext_proc(hcm).pop("stat_prefix", None)
    return yaml.safe_dump(cfg, sort_keys=False)


def istio_cluster(site: str) -> str:
    return f"outbound|8000||aigrid-site-{site}.aigrid.svc.cluster.local"


def as_istio(envoy_yaml: str, sites: list[str], inclusion_regexps: list[str], listener: str = "0.0.0.0_8080") -> str:
    cfg = yaml.safe_load(envoy_yaml)
    names = {f"site_{s}": istio_cluster(s) for s in sites}
    cfg = _rename(cfg, names)
    for c in cfg["static_resources"]["clusters"]:
        if c["name"] in names.values():
            c["alt_stat_name"] = c["name"] + ";"
    for hcm in _hcms(cfg):
        hcm["stat_prefix"] = f"outbound_{listener};"
        _routing_ext_proc(hcm)["stat_prefix"] = "aigrid"
    cfg["stats_config"] = {
        "use_all_default_tags": False,
        "stats_tags": copy.deepcopy(ISTIO_STATS_TAGS),
        "stats_matcher": {"inclusion_list": {"patterns": [
            *({"prefix": p} for p in ISTIO_REQUIRED_PREFIXES),
            *({"safe_regex": {"regex": r}} for r in [*ISTIO_REQUIRED_REGEXES, *inclusion_regexps]),
        ]}},
    }
    return yaml.safe_dump(cfg, sort_keys=False)


def with_ports(envoy_yaml: str, listen_port: int, admin_port: int) -> str:
    """The same config on other ports (a second Envoy beside the first)."""
    cfg = yaml.safe_load(envoy_yaml)
    cfg["admin"]["address"]["socket_address"]["port_value"] = admin_port
    for listener in cfg["static_resources"]["listeners"]:
        listener["address"]["socket_address"]["port_value"] = listen_port
    return yaml.safe_dump(cfg, sort_keys=False)
