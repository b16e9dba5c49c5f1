"""The Envoy side of the SLA-class trust rule (extproc.trust): which client headers are stripped before
any filter runs, the trusted front proxy's own filter chain, and JWT verification.

- Every peer: `x-aigrid-site`, `x-aigrid-decision` and `x-aigrid-priority` are removed by the early
  header mutation; with `sla_source: header`, so is the trusted header (when it has another name).
- Peers in `trust.front_proxy_cidrs` (sla_source header only) get a filter chain of their own whose early
  mutation keeps the trusted header: only they can set a class.
- `sla_source: jwt`: a `jwt_authn` filter verifies the token against the local JWKS and puts its payload
  in dynamic metadata; ext_proc receives that namespace (`metadata_options`). A missing or invalid token
  is let through without a payload (so the default class), never rejected here.
"""

from __future__ import annotations

from typing import Any

from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.request.trust import JWT_METADATA_KEY, JWT_NAMESPACE
from extproc.wire.contract import PRIORITY_HEADER

JWT_PROVIDER = "aigrid"


def stripped_headers(cfg: GatewayConfig, base: list[str], *, trusted_peer: bool) -> list[str]:
    """Headers the early mutation removes for a peer (trusted: a configured front proxy)."""
    t = cfg.trust
    out = list(base)
    keep = t.header if (t.sla_source == "header" and trusted_peer) else None
    for h in (PRIORITY_HEADER, t.header if t.sla_source == "header" else None):
        if h and h != keep and h not in out:
            out.append(h)
    return out


def front_proxy_ranges(cfg: GatewayConfig) -> list[dict[str, Any]]:
    """CidrRanges of the trusted front proxies (empty unless sla_source is header)."""
    t = cfg.trust
    if t.sla_source != "header":
        return []
    out = []
    for c in t.front_proxy_cidrs:
        addr, _, plen = c.partition("/")
        if not plen:
            plen = "128" if ":" in addr else "32"
        out.append({"address_prefix": addr, "prefix_len": int(plen)})
    return out


def jwt_filter(cfg: GatewayConfig) -> dict[str, Any] | None:
    t = cfg.trust
    if t.sla_source != "jwt" or t.jwt is None:
        return None
    j = t.jwt
    provider: dict[str, Any] = {
        "issuer": j.issuer,
        "local_jwks": {"filename": j.jwks_path},
        "from_headers": [{"name": j.header, "value_prefix": "Bearer "} if j.header == "authorization" else {"name": j.header}],
        "payload_in_metadata": JWT_METADATA_KEY,
        # The upstream (the GPU site) has no use for the client's token.
        "forward": False,
    }
    if j.audiences:
        provider["audiences"] = list(j.audiences)
    return {
        "name": JWT_NAMESPACE,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication",
            "providers": {JWT_PROVIDER: provider},
            "rules": [
                {
                    "match": {"prefix": "/"},
                    # A valid token gives its payload; none or a bad one goes on without (default class).
                    "requires": {"requires_any": {"requirements": [
                        {"provider_name": JWT_PROVIDER}, {"allow_missing_or_failed": {}},
                    ]}},
                }
            ],
        },
    }


def ext_proc_metadata_options(cfg: GatewayConfig) -> dict[str, Any] | None:
    if cfg.trust.sla_source != "jwt":
        return None
    return {"forwarding_namespaces": {"untyped": [JWT_NAMESPACE]}}
