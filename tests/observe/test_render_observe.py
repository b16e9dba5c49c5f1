"""The observability options render Envoy configs that `envoy --mode validate` accepts, with the pieces
each option implies, and nothing when they are off."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from extproc.gateway.config.load import ConfigError

from extproc.gateway.config import load_config_text
from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml
from extproc.tools.stack.procs import envoy_binary

BASE = "sites:\n  - name: edge\n    role: edge\n    endpoints: ['127.0.0.1:8001']\n  - name: remote\n    endpoints: ['127.0.0.1:8002']\n"


def _cfg(obs: str, access_log: bool = False):  # type: ignore[no-untyped-def]
    text = BASE + ("observability:\n" + obs if obs else "") + ("envoy:\n  access_log: true\n" if access_log else "")
    return load_config_text(text)


def _hcm(cfg) -> dict:  # type: ignore[no-untyped-def]
    return render_envoy_config(cfg)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


VARIANTS = {
    "access_log": "  usage: true\n  inject_stream_usage: true\n  client_headers: [site, decision, compression, overhead]\n",
    "ext_proc": "  usage: true\n  usage_via: ext_proc\n",
}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variants_validate(tmp_path: Path, name: str):
    p = tmp_path / "envoy.yaml"
    p.write_text(render_envoy_yaml(_cfg(VARIANTS[name], access_log=True)))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(p), "--disable-hot-restart"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]


def test_what_each_option_adds():
    off = _hcm(_cfg(""))
    assert [f["name"] for f in off["http_filters"]] == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    assert "access_log" not in off and "response_headers_to_add" not in off["route_config"]["virtual_hosts"][0]

    via_log = _hcm(_cfg(VARIANTS["access_log"]))
    assert [f["name"] for f in via_log["http_filters"]][1] == "envoy.filters.http.lua"
    assert via_log["access_log"][0]["name"] == "envoy.access_loggers.http_grpc"
    added = [h["header"]["key"] for h in via_log["route_config"]["virtual_hosts"][0]["response_headers_to_add"]]
    assert added == ["x-aigrid-site", "x-aigrid-decision", "x-aigrid-compression", "x-aigrid-overhead-ms"]
    removed = [m["remove"] for m in via_log["early_header_mutation_extensions"][0]["typed_config"]["mutations"]]
    assert {"x-aigrid-obs", "x-aigrid-overhead-ms", "x-aigrid-compression"} <= set(removed)

    via_ext = _hcm(_cfg(VARIANTS["ext_proc"]))
    obs = via_ext["http_filters"][1]["typed_config"]
    assert obs["observability_mode"] is True and obs["processing_mode"]["response_body_mode"] == "STREAMED"


@pytest.mark.parametrize(
    "obs, key",
    [
        ("  inject_stream_usage: true\n", "inject_stream_usage needs usage"),
        ("  client_headers: [site, site]\n", "at most once"),
        ("  client_headers: [secret]\n", "client_headers"),
        ("  usage_via: carrier_pigeon\n", "usage_via"),
    ],
)
def test_bad_settings_name_the_key(obs: str, key: str):
    with pytest.raises(ConfigError) as e:
        _cfg(obs)
    assert key in str(e.value)
