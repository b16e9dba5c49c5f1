"""docker-compose.yml: valid against the Compose specification's JSON schema, in step with `aigrid up`
(same components and site shapes), and its gateway/Envoy configs in sync with `aigrid envoy-config`.

No Docker engine runs here. The schema is the one `check-jsonschema` (PyPI) vendors from the
compose-spec project (`check_jsonschema/builtin_schemas/vendor/compose-spec.json`); where that package is
absent the schema test skips and the structural checks below still run.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from extproc.gateway.config import load_config
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.tools.stack.local import DEFAULT_SITES
from extproc.tools.stack.procs import envoy_binary

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONFIGS = {"sim": ("deploy/compose/aigrid.yaml", "deploy/compose/envoy.yaml"),
           "gpu": ("deploy/compose/aigrid.gpu.yaml", "deploy/compose/envoy.gpu.yaml")}
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def interpolate(text: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} interpolation (done before validation, as compose does)."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), text)


def _compose(env: dict[str, str] | None = None) -> dict:
    return yaml.safe_load(interpolate(COMPOSE.read_text(encoding="utf-8"), env))


def _schema_validator():
    pytest.importorskip("check_jsonschema", reason="check-jsonschema (ships the compose-spec schema) is not installed")
    import jsonschema
    from importlib.resources import files

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text(encoding="utf-8"))
    return jsonschema.validators.validator_for(schema)(schema)


@pytest.mark.parametrize("env", [{}, {"AIGRID_SITES": "gpu", "AIGRID_SIM_SCALE": "0"}])
def test_valid_against_compose_spec_schema(env):
    v = _schema_validator()
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}" for e in v.iter_errors(_compose(env))]
    assert not errors, "\n".join(errors)
    # And uninterpolated, as an editor's schema check would see it.
    assert not list(v.iter_errors(yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))))


def test_schema_check_is_live():
    # The same validator rejects a misspelt service key and a bad depends_on condition.
    v = _schema_validator()
    bad = copy.deepcopy(_compose())
    bad["services"]["serve"]["comand"] = ["serve"]
    bad["services"]["envoy"]["depends_on"]["serve"]["condition"] = "service_ready"
    msgs = [e.message for e in v.iter_errors(bad)]
    assert msgs and any("comand" in m for m in msgs)


def test_structure_by_hand():
    """Checks that need no schema package: keys, references, mounted files."""
    d = _compose()
    assert set(d) <= {"name", "services", "volumes", "networks", "configs", "secrets"} | {k for k in d if k.startswith("x-")}
    services = d["services"]
    declared_volumes = set(d.get("volumes") or {})
    for name, svc in services.items():
        assert "image" in svc or "build" in svc, name
        for dep in svc.get("depends_on") or {}:
            assert dep in services, f"{name} depends on unknown {dep}"
            # A default service must never depend on one that only runs under a profile.
            if not svc.get("profiles"):
                assert not services[dep].get("profiles"), f"{name} depends on profile-only {dep}"
        for vol in svc.get("volumes") or []:
            src = vol.split(":", 1)[0]
            if src.startswith("."):
                assert (ROOT / src).exists(), f"{name} mounts missing {src}"
            else:
                assert src in declared_volumes, f"{name} uses undeclared volume {src}"
        b = svc.get("build")
        if b:
            assert (ROOT / b["context"] / b["dockerfile"]).is_file()
        for port in svc.get("ports") or []:
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} beyond loopback"


def test_services_mirror_aigrid_up():
    d = _compose()
    s = d["services"]
    # `aigrid up` (extproc.tools.stack.local.LocalStack): redis, one site + one agent per site, serve, envoy.
    for core in ("redis", "serve", "envoy"):
        assert core in s and not s[core].get("profiles")
    assert s["serve"]["command"][0] == "serve"
    assert s["envoy"]["image"].startswith("envoyproxy/envoy:")
    for site in DEFAULT_SITES:
        sim = s[f"sim-{site.name}"]["command"]
        assert sim[0] == "sim"
        flags = dict(zip(sim[1::2], sim[2::2]))
        assert flags["--name"] == site.name and flags["--gpu"] == site.gpu and flags["--model"] == site.model
        assert int(flags["--replicas"]) == site.replicas and int(flags["--gpus-per-replica"]) == site.gpus_per_replica
        assert float(flags["--link-delay-ms"]) == site.link_delay_ms
        agent = s[f"agent-{site.name}"]["command"]
        aflags = dict(zip(agent[1::2], agent[2::2]))
        assert agent[0] == "agent" and aflags["--site"] == site.name
        assert aflags["--vllm-url"] == f"http://sim-{site.name}:8000/metrics"
        gpu = s[f"gpu-{site.name}"]
        assert gpu["profiles"] == ["gpu"] and gpu["image"].startswith("vllm/vllm-openai:")
        assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    # GPU mode: agents read the vLLM services.
    g = _compose({"AIGRID_SITES": "gpu"})["services"]
    assert g["agent-edge"]["command"][g["agent-edge"]["command"].index("--vllm-url") + 1] == "http://gpu-edge:8000/metrics"
    assert g["serve"]["command"][-1] == "/etc/aigrid/aigrid.gpu.yaml"
    # The LLMLingua-2 model volume reaches the ext_proc server; the one-shot fetch fills it.
    assert "llmlingua-model" in d["volumes"]
    assert any(v.startswith("llmlingua-model:") for v in s["serve"]["volumes"])
    assert any(v.startswith("llmlingua-model:") for v in s["llmlingua-model"]["volumes"])


@pytest.mark.parametrize("kind", sorted(CONFIGS))
def test_compose_configs_in_sync(kind, tmp_path):
    cfg_rel, envoy_rel = CONFIGS[kind]
    cfg = load_config(str(ROOT / cfg_rel))
    assert [(x.name, x.role.value, x.rtt_ms) for x in cfg.sites] == [(x.name, x.role, x.rtt_ms) for x in DEFAULT_SITES]
    assert [x.endpoints for x in cfg.sites] == [[f"{kind}-{x.name}:8000"] for x in DEFAULT_SITES]
    assert cfg.envoy.extproc_address == "serve:50051" and cfg.redis.url.startswith("redis://redis:")
    rendered = render_envoy_yaml(cfg)
    assert (ROOT / envoy_rel).read_text(encoding="utf-8") == rendered, (
        f"{envoy_rel} is stale: run aigrid envoy-config -c {cfg_rel} -o {envoy_rel}")
    # The mounted file names in docker-compose.yml are the ones serve/envoy read.
    mounts = {v.split(":")[0].removeprefix("./") for svc in _compose()["services"].values() for v in svc.get("volumes") or []}
    assert {cfg_rel, envoy_rel} <= mounts
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(ROOT / envoy_rel), "--base-id", str(os.getpid() % 60000 + 7)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
