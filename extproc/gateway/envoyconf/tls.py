"""TLS transport sockets for the rendered Envoy config: the client listener (DownstreamTlsContext), the
site clusters and the ext_proc cluster (UpstreamTlsContext, mutual when a client certificate is set)."""

from __future__ import annotations

import ipaddress
from typing import Any

from extproc.gateway.config.trust import ClientTls, ServerTls


def downstream(tls: ServerTls, alpn: list[str] | None = None) -> dict[str, Any]:
    ctx: dict[str, Any] = {
        "common_tls_context": {
            "tls_certificates": [{"certificate_chain": {"filename": tls.cert_path}, "private_key": {"filename": tls.key_path}}],
            "alpn_protocols": alpn or ["h2", "http/1.1"],
        }
    }
    if tls.client_ca_path:
        ctx["common_tls_context"]["validation_context"] = {"trusted_ca": {"filename": tls.client_ca_path}}
        ctx["require_client_certificate"] = True
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", **ctx},
    }


def upstream(tls: ClientTls, default_sni: str, alpn: list[str] | None = None) -> dict[str, Any]:
    sni = tls.sni or default_sni
    common: dict[str, Any] = {
        "validation_context": {
            "trusted_ca": {"filename": tls.ca_path},
            # Verify the name, not only the CA: any certificate the CA signed is not enough.
            "match_typed_subject_alt_names": [
                {"san_type": "IP_ADDRESS" if _is_ip(sni) else "DNS", "matcher": {"exact": sni}}
            ],
        }
    }
    if alpn:
        common["alpn_protocols"] = alpn
    if tls.cert_path and tls.key_path:
        common["tls_certificates"] = [{"certificate_chain": {"filename": tls.cert_path}, "private_key": {"filename": tls.key_path}}]
    ctx: dict[str, Any] = {"common_tls_context": common}
    if not _is_ip(sni):
        ctx["sni"] = sni
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", **ctx},
    }


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False
