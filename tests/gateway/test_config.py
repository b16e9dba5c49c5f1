"""aigrid.yaml validation: errors name the key and the reason."""

from __future__ import annotations

import pytest

from extproc.gateway.config import ConfigError, load_config, load_config_text

MIN = "sites:\n  - name: edge\n    role: edge\n    endpoints: ['127.0.0.1:8001']\n"


def test_minimal_config_has_working_defaults():
    c = load_config_text(MIN)
    assert c.default_site == "edge"
    assert c.sites[0].cluster_name == "site_edge"
    assert c.gateway.max_body_bytes == 8 * 1024 * 1024


def test_default_site_prefers_explicit_then_edge_then_first():
    two = MIN + "  - name: far\n    endpoints: ['10.0.0.1:80']\n"
    assert load_config_text(two).default_site == "edge"
    assert load_config_text(two + "policy:\n  default_site: far\n").default_site == "far"
    remote_only = "sites:\n  - name: a\n    endpoints: ['h:1']\n  - name: b\n    endpoints: ['h:2']\n"
    assert load_config_text(remote_only).default_site == "a"


@pytest.mark.parametrize(
    "text, where",
    [
        ("sites: []", "sites"),
        ("{}", "sites"),
        ("- a\n- b", "top level must be a mapping"),
        ("sites: [", "not valid YAML"),
        ("sites:\n  - name: Edge!\n    endpoints: ['h:1']\n", "sites.0.name"),
        ("sites:\n  - name: e\n    endpoints: ['no-port']\n", "sites.0.endpoints.0"),
        ("sites:\n  - name: e\n    endpoints: []\n", "sites.0.endpoints"),
        ("sites:\n  - name: e\n    endpoints: ['h:1']\n    colour: red\n", "sites.0.colour"),
        (MIN + "  - name: edge\n    endpoints: ['h:2']\n", "repeated: edge"),
        (MIN + "policy:\n  default_site: nowhere\n", "nowhere"),
        (MIN + "policy:\n  spill_on: 0.3\n  spill_off: 0.5\n", "hysteresis"),
        (MIN + "policy:\n  stale_after_s: -1\n", "policy.stale_after_s"),
        (MIN + "envoy:\n  extproc_max_streams: 10\n", "envoy.extproc_max_streams"),
        (MIN + "redis:\n  key_prefix: 'a b'\n", "redis.key_prefix"),
    ],
)
def test_errors_name_key_and_reason(text, where):
    with pytest.raises(ConfigError) as exc:
        load_config_text(text, "aigrid.yaml")
    assert where in str(exc.value)
    assert str(exc.value).startswith("aigrid.yaml")


def test_missing_file_and_env(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="not found"):
        load_config(str(tmp_path / "nope.yaml"))
    p = tmp_path / "c.yaml"
    p.write_text(MIN)
    monkeypatch.setenv("AIGRID_CONFIG", str(p))
    assert load_config(None).sites[0].name == "edge"
