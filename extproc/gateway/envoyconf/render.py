"""aigrid.yaml → envoy.yaml. Pure: config in, a dict (or YAML text) out.

What the rendered config guarantees, and why:
- The routing header is removed from client requests by an *early* header mutation, which runs before
  route selection and before any filter: a client can never pick its site, even while ext_proc is down.
- ext_proc fails open (`failure_mode_allow`): with the processor gone, the request keeps its body and
  takes the default route (the default site, with failover).
- Each site is its own cluster (active health checks, outlier detection); the route for site S points at an
  aggregate cluster [S, then the others by RTT], and retries move to the next priority
  (`previous_priorities`), so a dead site's requests are served elsewhere. Per-site request counts stay
  in `cluster.<site cluster>.upstream_rq_total`.
- Buffer limit and ext_proc gRPC message size both follow `gateway.max_body_bytes`.
- The ext_proc cluster's circuit breakers sit far above the 1,024-stream default: every in-flight LLM
  request holds one stream for its whole (minutes-long) life.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from extproc.gateway.config.schema import GatewayConfig, SiteConfig
from extproc.gateway.envoyconf import tls, trust
from extproc.gateway.envoyconf.observe import apply_observability
from extproc.wire.contract import DECISION_HEADER, SITE_HEADER

EXTPROC_CLUSTER = "aigrid_extproc"
HCM_STAT_PREFIX = "aigrid"
EXTPROC_STAT_PREFIX = "aigrid"


def via_cluster(site: SiteConfig) -> str:
    """Aggregate cluster for traffic routed to `site`: the site first, the others as failover."""
    return f"aigrid_via_{site.name}"


def _split_hostport(hp: str) -> tuple[str, int]:
    host, _, port = hp.rpartition(":")
    return host, int(port)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def _duration(seconds: float) -> str:
    return f"{seconds:.3f}s"


def _endpoints(cluster: str, hostports: list[str]) -> dict[str, Any]:
    eps = []
    for hp in hostports:
        host, port = _split_hostport(hp)
        eps.append({"endpoint": {"address": {"socket_address": {"address": host, "port_value": port}}}})
    return {"cluster_name": cluster, "endpoints": [{"lb_endpoints": eps}]}


def _site_cluster(site: SiteConfig, cfg: GatewayConfig) -> dict[str, Any]:
    c = _site_cluster_base(site, cfg)
    if site.tls is not None:
        c["transport_socket"] = tls.upstream(site.tls, _split_hostport(site.endpoints[0])[0])
    return c


def _site_cluster_base(site: SiteConfig, cfg: GatewayConfig) -> dict[str, Any]:
    e = cfg.envoy
    hosts = [_split_hostport(hp)[0] for hp in site.endpoints]
    interval = _duration(e.health_check_interval_ms / 1000)
    return {
        "name": site.cluster_name,
        "type": "STATIC" if all(_is_ip(h) for h in hosts) else "STRICT_DNS",
        "connect_timeout": "1s",
        # Least-request spreads long LLM requests better than round robin across a site's replicas.
        "lb_policy": "LEAST_REQUEST",
        "load_assignment": _endpoints(site.cluster_name, site.endpoints),
        "health_checks": [
            {
                "timeout": "1s",
                "interval": interval,
                # Without this, a cluster with no traffic is checked only once a minute.
                "no_traffic_interval": interval,
                "unhealthy_threshold": 2,
                "healthy_threshold": 1,
                "http_health_check": {"path": site.health_path},
            }
        ],
        "outlier_detection": {
            "consecutive_5xx": 5,
            "consecutive_gateway_failure": 3,
            "interval": "5s",
            "base_ejection_time": "10s",
            "max_ejection_percent": 100,
        },
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": e.upstream_max_requests,
                    "max_pending_requests": e.upstream_max_requests,
                    "max_requests": e.upstream_max_requests,
                    "max_retries": 1024,
                }
            ]
        },
    }


def _failover_order(site: SiteConfig, cfg: GatewayConfig) -> list[SiteConfig]:
    others = sorted((s for s in cfg.sites if s.name != site.name), key=lambda s: (s.rtt_ms, s.name))
    return [site, *others]


def _aggregate_cluster(site: SiteConfig, cfg: GatewayConfig) -> dict[str, Any]:
    return {
        "name": via_cluster(site),
        "connect_timeout": "1s",
        "lb_policy": "CLUSTER_PROVIDED",
        "cluster_type": {
            "name": "envoy.clusters.aggregate",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.clusters.aggregate.v3.ClusterConfig",
                "clusters": [s.cluster_name for s in _failover_order(site, cfg)],
            },
        },
        # Retries are admitted by the route's cluster, this one: Envoy's default of 3 concurrent retries
        # refused failover (503, flags UO) when a site died under 10 req/s of 100-400 ms requests.
        "circuit_breakers": {"thresholds": [{"max_retries": cfg.envoy.upstream_max_requests}]},
    }


def _extproc_cluster(cfg: GatewayConfig) -> dict[str, Any]:
    c = _extproc_cluster_base(cfg)
    if cfg.envoy.extproc_tls is not None and (cfg.envoy.extproc_address or cfg.gateway.listen).startswith("unix:"):
        raise ValueError("envoy.extproc_tls does not apply to a Unix socket ext_proc address")
    if cfg.envoy.extproc_tls is not None:
        host = _split_hostport(cfg.envoy.extproc_address or cfg.gateway.listen)[0]
        c["transport_socket"] = tls.upstream(cfg.envoy.extproc_tls, host, alpn=["h2"])
    return c


def _extproc_cluster_base(cfg: GatewayConfig) -> dict[str, Any]:
    addr = cfg.envoy.extproc_address or cfg.gateway.listen
    n = cfg.envoy.extproc_max_streams
    if addr.startswith("unix:"):
        # A Unix socket: Envoy connects to the path (a `pipe` address); no port, no DNS.
        kind = "STATIC"
        assignment = {"cluster_name": EXTPROC_CLUSTER, "endpoints": [{"lb_endpoints": [
            {"endpoint": {"address": {"pipe": {"path": addr[len("unix:"):]}}}}]}]}
    else:
        host, port = _split_hostport(addr)
        if host in ("0.0.0.0", "::", "[::]"):
            host = "127.0.0.1"
        kind = "STATIC" if _is_ip(host) else "STRICT_DNS"
        assignment = _endpoints(EXTPROC_CLUSTER, [f"{host}:{port}"])
    return {
        "name": EXTPROC_CLUSTER,
        "type": kind,
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        "max_concurrent_streams": min(n, 2_147_483_647),
                        "connection_keepalive": {"interval": "10s", "timeout": "5s"},
                    }
                },
            }
        },
        "circuit_breakers": {
            "thresholds": [
                {"max_connections": n, "max_pending_requests": n, "max_requests": n, "max_retries": 16}
            ]
        },
        "load_assignment": assignment,
    }


def _route(cluster: str, cfg: GatewayConfig) -> dict[str, Any]:
    return {
        "cluster": cluster,
        "timeout": _duration(cfg.envoy.route_timeout_s),
        "retry_policy": {
            # Only failures before the upstream saw the request: an LLM request is never run twice.
            "retry_on": "connect-failure,refused-stream,reset-before-request",
            "num_retries": max(1, len(cfg.sites) - 1),
            "retry_priority": {
                "name": "envoy.retry_priorities.previous_priorities",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3.PreviousPrioritiesConfig",
                    "update_frequency": 1,
                },
            },
        },
    }


def _routes(cfg: GatewayConfig) -> list[dict[str, Any]]:
    routes = [
        {
            "name": f"site_{s.name}",
            "match": {"prefix": "/", "headers": [{"name": SITE_HEADER, "string_match": {"exact": s.name}}]},
            "route": _route(via_cluster(s), cfg),
        }
        for s in cfg.sites
    ]
    default = cfg.site(cfg.default_site)
    # No (or an unknown) routing header: ext_proc is down or declined. The default site, with failover.
    routes.append({"name": "default", "match": {"prefix": "/"}, "route": _route(via_cluster(default), cfg)})
    return routes


def _ext_proc_filter(cfg: GatewayConfig) -> dict[str, Any]:
    f = _ext_proc_filter_base(cfg)
    metadata = trust.ext_proc_metadata_options(cfg)
    if metadata is not None:
        f["typed_config"]["metadata_options"] = metadata
    return f


def _ext_proc_filter_base(cfg: GatewayConfig) -> dict[str, Any]:
    extend = cfg.envoy.max_message_timeout_ms > cfg.envoy.message_timeout_ms
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            # The processor may extend one message's timeout up to this (before it holds a request back).
            **({"max_message_timeout": _duration(cfg.envoy.max_message_timeout_ms / 1000)} if extend else {}),
            "grpc_service": {"envoy_grpc": {"cluster_name": EXTPROC_CLUSTER}},
            "failure_mode_allow": True,
            # Lets the processor ask for the buffered body only of requests it inspects (see below).
            "allow_mode_override": True,
            "message_timeout": _duration(cfg.envoy.message_timeout_ms / 1000),
            "stat_prefix": EXTPROC_STAT_PREFIX,
            "processing_mode": {
                "request_header_mode": "SEND",
                # NONE by default; the processor switches inspected requests to BUFFERED in its headers
                # answer. Buffering every body up front would turn a large body that arrives before that
                # answer into a 413, even for requests we never look at.
                "request_body_mode": "NONE",
                "request_trailer_mode": "SKIP",
                # The response path never touches the processor: no latency added to token streams.
                "response_header_mode": "SKIP",
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
        },
    }


def render_envoy_config(cfg: GatewayConfig) -> dict[str, Any]:
    chains = [{"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": _hcm(cfg, trusted_peer=False)}]}]
    ranges = trust.front_proxy_ranges(cfg)
    if ranges:
        # The trusted front proxies' own chain (matched first, by source address): it keeps the header
        # that carries their SLA class; every other peer gets the chain that strips it.
        chains.insert(0, {
            "filter_chain_match": {"source_prefix_ranges": ranges},
            "filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": _hcm(cfg, trusted_peer=True)}],
        })
    if cfg.envoy.listener_tls is not None:
        for chain in chains:
            chain["transport_socket"] = tls.downstream(cfg.envoy.listener_tls)
    return _bootstrap(cfg, chains)


def _hcm(cfg: GatewayConfig, *, trusted_peer: bool) -> dict[str, Any]:
    e = cfg.envoy
    jwt = trust.jwt_filter(cfg)
    stripped = trust.stripped_headers(cfg, [SITE_HEADER, DECISION_HEADER], trusted_peer=trusted_peer)
    hcm: dict[str, Any] = {
        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": HCM_STAT_PREFIX,
        "codec_type": "AUTO",
        "early_header_mutation_extensions": [
            {
                "name": "envoy.http.early_header_mutation.header_mutation",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation",
                    "mutations": [{"remove": h} for h in stripped],
                },
            }
        ],
        "route_config": {
            "name": "aigrid_routes",
            "virtual_hosts": [{"name": "aigrid", "domains": ["*"], "routes": _routes(cfg)}],
        },
        "http_filters": [
            *([jwt] if jwt else []),
            _ext_proc_filter(cfg),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    if e.access_log:
        hcm["access_log"] = [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {
                        "json_format": {
                            "start": "%START_TIME%",
                            "method": "%REQ(:METHOD)%",
                            "path": "%REQ(:PATH)%",
                            "status": "%RESPONSE_CODE%",
                            "site": f"%REQ({SITE_HEADER})%",
                            "cluster": "%UPSTREAM_CLUSTER%",
                            "duration_ms": "%DURATION%",
                            "flags": "%RESPONSE_FLAGS%",
                        }
                    },
                },
            }
        ]
    apply_observability(hcm, cfg, EXTPROC_CLUSTER)
    return hcm


def _bootstrap(cfg: GatewayConfig, chains: list[dict[str, Any]]) -> dict[str, Any]:
    e = cfg.envoy
    return {
        "admin": {"address": {"socket_address": {"address": e.admin_address, "port_value": e.admin_port}}},
        "static_resources": {
            "listeners": [
                {
                    "name": "aigrid_ingress",
                    "address": {"socket_address": {"address": e.listen_address, "port_value": e.listen_port}},
                    # BUFFERED bodies are bounded by this (default 1 MiB → 413 before ext_proc sees them).
                    "per_connection_buffer_limit_bytes": cfg.gateway.max_body_bytes,
                    "filter_chains": chains,
                }
            ],
            "clusters": [
                *(_site_cluster(s, cfg) for s in cfg.sites),
                *(_aggregate_cluster(s, cfg) for s in cfg.sites),
                _extproc_cluster(cfg),
            ],
        },
    }


HEADER = "# Rendered by `aigrid envoy-config` from aigrid.yaml. Edit aigrid.yaml and re-render.\n"


def render_envoy_yaml(cfg: GatewayConfig) -> str:
    return HEADER + yaml.safe_dump(render_envoy_config(cfg), sort_keys=False, width=120)
