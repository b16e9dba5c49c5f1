"""A client claiming realtime is routed as its trusted class, through the real Envoy and `aigrid serve`:
with the default rule, a front-proxy header (only from the proxy's address), an API-key map, and a JWT
that Envoy's jwt_authn verified."""

from __future__ import annotations

import http.client

import pytest

from extproc.gateway.request.trust import api_key_digest
from harness import chat_body
from jwtutil import Signer  # type: ignore[import-not-found]

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


def _post_from(gw, source_ip: str, headers: dict[str, str]) -> int:  # type: ignore[no-untyped-def]
    """POST from a chosen loopback source address (127.0.0.2 is 'some other client', not the proxy)."""
    c = http.client.HTTPConnection("127.0.0.1", gw.envoy_port, timeout=10, source_address=(source_ip, 0))
    try:
        c.request("POST", CHAT, body=chat_body("hello"), headers={"content-type": "application/json", **headers})
        r = c.getresponse()
        r.read()
        return r.status
    finally:
        c.close()


def _by_class(gw) -> dict[str, float]:  # type: ignore[no-untyped-def]
    out: dict[str, float] = {}
    for line in gw.metrics().splitlines():
        if line.startswith("aigrid_decisions_total{"):
            sla = line.split('sla="', 1)[1].split('"', 1)[0]
            out[sla] = out.get(sla, 0) + float(line.split()[-1])
    return out


def _upstream_priorities(st) -> set:  # type: ignore[no-untyped-def]
    return {rec["headers"].get("x-aigrid-priority") for s in st.sites for rec in st.records(s)}


def test_client_claims_are_ignored_and_trusted_sources_decide(stack_factory, tmp_path) -> None:
    st = stack_factory()
    claim = {"x-aigrid-priority": "realtime"}

    # 1. Default rule (the shipped config): nobody can promote itself; the header never reaches a site.
    gw = st.add_gateway({"trust": {"sla_source": "default", "front_proxy_cidrs": [], "default_class": "batch"}})
    for ip in ("127.0.0.1", "127.0.0.2"):
        assert _post_from(gw, ip, claim) == 200
    assert _by_class(gw) == {"batch": 2.0}
    assert _upstream_priorities(st) == {None}

    # 2. Front proxy at 127.0.0.1 sets the class; the same header from 127.0.0.2 is stripped by Envoy.
    st.clear_records()
    gw = st.add_gateway({"trust": {"sla_source": "header", "front_proxy_cidrs": ["127.0.0.1/32"]}})
    assert _post_from(gw, "127.0.0.2", claim) == 200
    assert _by_class(gw) == {"standard": 1.0}
    assert _post_from(gw, "127.0.0.1", claim) == 200
    assert _by_class(gw) == {"standard": 1.0, "realtime": 1.0}
    assert _upstream_priorities(st) == {None, "realtime"}

    # 3. API keys: the key's class, whatever the request claims.
    keys = {api_key_digest("sk-gold"): "realtime", api_key_digest("sk-bulk"): "batch"}
    gw = st.add_gateway({"trust": {"sla_source": "api_key", "front_proxy_cidrs": [], "api_keys": keys}})
    assert _post_from(gw, "127.0.0.2", {**claim, "authorization": "Bearer sk-bulk"}) == 200
    assert _post_from(gw, "127.0.0.2", {**claim, "authorization": "Bearer sk-guess"}) == 200
    assert _post_from(gw, "127.0.0.2", {"x-api-key": "sk-gold"}) == 200
    assert _by_class(gw) == {"batch": 1.0, "standard": 1.0, "realtime": 1.0}
    assert "sk-gold" not in gw.metrics() and "sk-gold" not in (st.root / "logs" / f"serve-{gw.name}.log").read_text()

    # 4. JWT verified by Envoy: the claim decides; a token signed by someone else gives the default.
    signer, forger = Signer(), Signer()
    jwks = tmp_path / "jwks.json"
    jwks.write_text(signer.jwks())
    gw = st.add_gateway({"trust": {"sla_source": "jwt", "front_proxy_cidrs": [],
                                   "jwt": {"issuer": "https://idp.test", "jwks_path": str(jwks), "audiences": ["aigrid"]}}})
    good = signer.token({"aigrid_class": "realtime"})
    assert _post_from(gw, "127.0.0.2", {"authorization": f"Bearer {good}"}) == 200
    assert _post_from(gw, "127.0.0.2", {**claim, "authorization": f"Bearer {forger.token({'aigrid_class': 'realtime'})}"}) == 200
    assert _post_from(gw, "127.0.0.2", {**claim, "authorization": f"Bearer {signer.token({'aigrid_class': 'realtime'}, aud='other')}"}) == 200
    assert _post_from(gw, "127.0.0.2", {"authorization": f"Bearer {signer.token({'aigrid_class': 'batch'})}"}) == 200
    assert _post_from(gw, "127.0.0.2", claim) == 200
    assert _by_class(gw) == {"realtime": 1.0, "standard": 3.0, "batch": 1.0}
