"""The SLA-class trust rule (pure), its settings, and its Envoy side (validated by the real Envoy)."""

from __future__ import annotations

import itertools
import subprocess

import pytest
import yaml
from pydantic import ValidationError

from extproc.gateway.config.load import load_config_text
from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml
from extproc.gateway.request.features import SlaClass
from extproc.tools.stack.procs import envoy_binary
from extproc.gateway.config.trust import TrustSettings
from jwtutil import Signer  # type: ignore[import-not-found]

from extproc.gateway.request.trust import SlaSource, TrustRule, api_key_digest, headers_read, resolve_sla, rule_from_settings

R, S, B = SlaClass.realtime, SlaClass.standard, SlaClass.batch
KEY_RT, KEY_BATCH = "sk-realtime-0123", "sk-batch-4567"
KEYS = {api_key_digest(KEY_RT): R, api_key_digest(KEY_BATCH): B}

CLAIMS = ["realtime", "REALTIME ", "batch", "standard", "urgent", "", None, 1, ["realtime"], {"x": "realtime"}]
HEADER_VALUES = [None, "realtime", " Realtime ", "batch", "standard", "urgent!!", "", "realtime\r\nx: y", "réaltime"]


def _expected_claim(v: object) -> SlaClass | None:
    return {"realtime": R, "batch": B, "standard": S}.get(v.strip().lower()) if isinstance(v, str) else None


@pytest.mark.parametrize("default", list(SlaClass))
def test_default_source_ignores_every_client_claim(default: SlaClass) -> None:
    rule = TrustRule(SlaSource.default, default)
    for v, auth in itertools.product(HEADER_VALUES, (None, f"Bearer {KEY_RT}")):
        h = {} if v is None else {"x-aigrid-priority": v}
        if auth:
            h["authorization"] = auth
        assert resolve_sla(rule, h, {"aigrid_class": "realtime"}) is default


@pytest.mark.parametrize("default", [S, B])
def test_header_source_takes_exact_class_names_only(default: SlaClass) -> None:
    rule = TrustRule(SlaSource.header, default, header="x-front-class")
    for v in HEADER_VALUES:
        h = {} if v is None else {"x-front-class": v}
        want = _expected_claim(v) or default
        assert resolve_sla(rule, h) is want, v
        # The client's own x-aigrid-priority is not the trusted header: never read.
        assert resolve_sla(rule, {"x-aigrid-priority": "realtime"}) is default


@pytest.mark.parametrize(
    ("headers", "want"),
    [
        ({"authorization": f"Bearer {KEY_RT}"}, R),
        ({"authorization": f"bearer   {KEY_RT}  "}, R),
        ({"authorization": f"Bearer {KEY_BATCH}"}, B),
        ({"x-api-key": KEY_RT}, R),
        ({"authorization": "Bearer sk-unknown"}, S),
        ({"authorization": f"Basic {KEY_RT}"}, S),  # not a bearer token; no x-api-key either
        ({"authorization": "Bearer "}, S),
        ({"authorization": f"Bearer {KEY_RT}x"}, S),
        ({"authorization": f"Bearer {api_key_digest(KEY_RT)}"}, S),  # the digest is not the key
        ({"x-api-key": ""}, S),
        ({}, S),
        ({"x-aigrid-priority": "realtime"}, S),
        ({"authorization": "Bearer sk-unknown", "x-api-key": KEY_RT}, S),  # the bearer token is the key
    ],
)
def test_api_key_source(headers: dict[str, str], want: SlaClass) -> None:
    assert resolve_sla(TrustRule(SlaSource.api_key, S, api_keys=KEYS), headers) is want


@pytest.mark.parametrize("claim", CLAIMS)
@pytest.mark.parametrize("path", ["aigrid_class", "aigrid.class"])
def test_jwt_source_reads_the_verified_claim(claim: object, path: str) -> None:
    rule = TrustRule(SlaSource.jwt, B, jwt_claim=path)
    payload = {"aigrid_class": claim} if path == "aigrid_class" else {"aigrid": {"class": claim}}
    assert resolve_sla(rule, {"x-aigrid-priority": "realtime"}, payload) is (_expected_claim(claim) or B)
    # No verified payload (no token, or jwt_authn rejected it): the default, whatever the client says.
    assert resolve_sla(rule, {"x-aigrid-priority": "realtime"}, None) is B
    assert resolve_sla(rule, {}, {"aigrid": "realtime"} if path == "aigrid.class" else {}) is B


def test_headers_read_is_what_the_rule_needs() -> None:
    assert headers_read(TrustRule()) == frozenset()
    assert headers_read(TrustRule(SlaSource.header, header="X-Front")) == {"x-front"}
    assert headers_read(TrustRule(SlaSource.api_key)) == {"authorization", "x-api-key"}
    assert headers_read(TrustRule(SlaSource.jwt)) == frozenset()


# -- settings --------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("trust", "needle"),
    [
        ({"sla_source": "header"}, "front_proxy_cidrs"),
        ({"sla_source": "header", "front_proxy_cidrs": ["10.0.0.300/8"]}, "not a CIDR"),
        ({"sla_source": "api_key"}, "api_keys"),
        ({"sla_source": "api_key", "api_keys": {KEY_RT: "realtime"}}, "SHA-256 hex digests"),
        ({"sla_source": "api_key", "api_keys": {api_key_digest(KEY_RT): "gold"}}, "realtime"),
        ({"sla_source": "jwt"}, "jwt"),
        ({"sla_source": "mtls"}, "sla_source"),
        ({"default_class": "vip"}, "default_class"),
        ({"header": "X Bad"}, "header"),
    ],
)
def test_bad_trust_settings_name_the_key(trust: dict, needle: str) -> None:
    with pytest.raises(ValidationError) as e:
        TrustSettings(**trust)
    assert needle in str(e.value)
    assert KEY_RT not in str(e.value).replace(f"'{KEY_RT}'", "")  # a raw key pasted by mistake is not echoed in the reason


def test_rule_from_settings() -> None:
    s = TrustSettings(sla_source="api_key", default_class="batch", api_keys={api_key_digest(KEY_RT): "realtime"})
    rule = rule_from_settings(s)
    assert rule.source is SlaSource.api_key and rule.default_class is B
    assert resolve_sla(rule, {"x-api-key": KEY_RT}) is R


# -- Envoy side ------------------------------------------------------------------------------------------
BASE = """
sites:
  - {name: edge, role: edge, endpoints: ["127.0.0.1:8001"]}
  - {name: remote, endpoints: ["127.0.0.1:8002"], rtt_ms: 8}
"""


def _cfg(trust: str = ""):  # type: ignore[no-untyped-def]
    return load_config_text(BASE + trust)


def _chains(cfg) -> list[dict]:  # type: ignore[no-untyped-def]
    return render_envoy_config(cfg)["static_resources"]["listeners"][0]["filter_chains"]


def _stripped(chain: dict) -> list[str]:
    hcm = chain["filters"][0]["typed_config"]
    return [m["remove"] for m in hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]]


def _validate(tmp_path, cfg) -> None:  # type: ignore[no-untyped-def]
    p = tmp_path / "envoy.yaml"
    p.write_text(render_envoy_yaml(cfg))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(p), "--disable-hot-restart"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_default_config_strips_the_client_priority_header() -> None:
    (chain,) = _chains(_cfg())
    assert set(_stripped(chain)) == {"x-aigrid-site", "x-aigrid-decision", "x-aigrid-priority"}
    assert "filter_chain_match" not in chain


def test_front_proxy_gets_its_own_chain(tmp_path) -> None:
    cfg = _cfg("trust: {sla_source: header, header: x-front-class, front_proxy_cidrs: ['10.1.0.0/16', '192.0.2.7', '2001:db8::/32']}\n")
    trusted, other = _chains(cfg)
    assert trusted["filter_chain_match"]["source_prefix_ranges"] == [
        {"address_prefix": "10.1.0.0", "prefix_len": 16}, {"address_prefix": "192.0.2.7", "prefix_len": 32},
        {"address_prefix": "2001:db8::", "prefix_len": 32},
    ]
    assert "x-front-class" not in _stripped(trusted) and "x-aigrid-priority" in _stripped(trusted)
    assert "filter_chain_match" not in other and {"x-front-class", "x-aigrid-priority"} <= set(_stripped(other))
    _validate(tmp_path, cfg)


def test_jwt_filter_runs_before_ext_proc_and_forwards_its_metadata(tmp_path) -> None:
    jwks = tmp_path / "jwks.json"
    jwks.write_text(Signer().jwks())
    cfg = _cfg(f"trust: {{sla_source: jwt, jwt: {{issuer: https://idp.example, jwks_path: {jwks}, audiences: [aigrid]}}}}\n")
    (chain,) = _chains(cfg)
    filters = chain["filters"][0]["typed_config"]["http_filters"]
    assert [f["name"] for f in filters] == ["envoy.filters.http.jwt_authn", "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    provider = filters[0]["typed_config"]["providers"]["aigrid"]
    assert provider["payload_in_metadata"] == "aigrid_jwt" and provider["audiences"] == ["aigrid"]
    assert filters[1]["typed_config"]["metadata_options"] == {"forwarding_namespaces": {"untyped": ["envoy.filters.http.jwt_authn"]}}
    _validate(tmp_path, cfg)


def test_shipped_config_lets_no_client_promote_itself() -> None:
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    doc = yaml.safe_load((repo / "envoy" / "envoy.yaml").read_text())
    chains = doc["static_resources"]["listeners"][0]["filter_chains"]
    assert all("x-aigrid-priority" in _stripped(c) for c in chains)


def test_hash_key_cli_prints_the_digest_from_stdin() -> None:
    import sys

    r = subprocess.run([sys.executable, "-m", "extproc.cli", "trust", "hash-key"], input="sk-gold\n",
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == api_key_digest("sk-gold")
