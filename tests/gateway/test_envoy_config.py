"""Every rendered Envoy config passes `envoy --mode validate`, and the shipped envoy.yaml is current."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from extproc.gateway.config import load_config, load_config_text
from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml
from extproc.tools.stack.procs import envoy_binary

REPO = Path(__file__).resolve().parents[2]


def validate(tmp_path: Path, text: str) -> None:
    p = tmp_path / "envoy.yaml"
    p.write_text(text)
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(p), "--disable-hot-restart"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def sites_yaml(n: int) -> str:
    lines = ["sites:"]
    for i in range(n):
        role = "edge" if i == 0 else "remote"
        lines += [f"  - name: site{i}", f"    role: {role}", f"    endpoints: ['127.0.0.1:{8001 + i}', 'gpu{i}.example.internal:8000']", f"    rtt_ms: {1 + 5 * i}"]
    return "\n".join(lines) + "\nenvoy:\n  access_log: true\n"


@pytest.mark.parametrize("n", [1, 2, 3])
def test_rendered_configs_validate(tmp_path, n):
    validate(tmp_path, render_envoy_yaml(load_config_text(sites_yaml(n))))


def test_shipped_envoy_yaml_is_rendered_from_shipped_config(tmp_path):
    cfg = load_config(str(REPO / "envoy" / "aigrid.yaml"))
    assert (REPO / "envoy" / "envoy.yaml").read_text() == render_envoy_yaml(cfg), "re-render: aigrid envoy-config -c envoy/aigrid.yaml -o envoy/envoy.yaml"
    validate(tmp_path, (REPO / "envoy" / "envoy.yaml").read_text())


def test_config_properties():
    c = render_envoy_config(load_config_text(sites_yaml(2)))
    listener = c["static_resources"]["listeners"][0]
    assert listener["per_connection_buffer_limit_bytes"] == 8 * 1024 * 1024
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    removed = [m["remove"] for m in hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]]
    assert "x-aigrid-site" in removed
    ext = hcm["http_filters"][0]["typed_config"]
    assert ext["failure_mode_allow"] is True
    assert ext["processing_mode"]["request_body_mode"] == "NONE"  # BUFFERED per request, by mode_override
    assert ext["allow_mode_override"] is True
    assert hcm["http_filters"][-1]["name"] == "envoy.filters.http.router"
    clusters = {cl["name"]: cl for cl in c["static_resources"]["clusters"]}
    assert clusters["aigrid_extproc"]["circuit_breakers"]["thresholds"][0]["max_requests"] > 1024
    assert clusters["site_site0"]["type"] == "STRICT_DNS"  # has a hostname endpoint
    assert clusters["site_site0"]["health_checks"][0]["http_health_check"]["path"] == "/health"
    assert "outlier_detection" in clusters["site_site1"]
    agg = clusters["aigrid_via_site0"]["cluster_type"]["typed_config"]["clusters"]
    assert agg == ["site_site0", "site_site1"]
    routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[-1]["route"]["cluster"] == "aigrid_via_site0"  # default route → default site


def test_envoy_config_cli_writes_file(tmp_path):
    cfg = tmp_path / "aigrid.yaml"
    cfg.write_text(sites_yaml(2))
    out = tmp_path / "out.yaml"
    from extproc.cli import main

    assert main(["envoy-config", "-c", str(cfg), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text())["admin"]["address"]["socket_address"]["port_value"] == 9901
    assert main(["envoy-config", "-c", str(tmp_path / "missing.yaml")]) == 2
