"""ext_proc over a Unix socket (`gateway.listen: unix:/path`): `aigrid serve` listens on the socket, the
rendered Envoy reaches it through a `pipe` address, and requests are routed as over TCP; TLS is refused
there, in the gateway's and in Envoy's settings."""

from __future__ import annotations

import json
import os

import pytest
import yaml
from harness import chat_body, http, wait_until

from extproc.gateway.config import load_config
from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml
from extproc.tools.stack.procs import free_port, http_ok, port_open, python_argv, start_envoy

pytestmark = pytest.mark.slow


def test_routed_through_a_unix_socket(stack_factory, tmp_path) -> None:  # type: ignore[no-untyped-def]
    st = stack_factory()
    sock = tmp_path / "aigrid.sock"
    cfg = st.config_dict((free_port(), free_port(), free_port(), free_port()))
    cfg["gateway"]["listen"] = f"unix:{sock}"
    path = tmp_path / "uds.yaml"
    path.write_text(yaml.safe_dump(cfg))
    rendered = render_envoy_config(load_config(str(path)))
    ext = next(c for c in rendered["static_resources"]["clusters"] if c["name"] == "aigrid_extproc")
    assert ext["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"] == {"pipe": {"path": str(sock)}}
    metrics = int(cfg["gateway"]["metrics_listen"].rsplit(":", 1)[1])
    serve = st.group.start("serve-uds", python_argv("-m", "extproc.cli", "serve", "--config", str(path)))
    serve.wait_ready(lambda: sock.exists() and port_open(metrics), 30, "socket and metrics up")
    (tmp_path / "envoy.yaml").write_text(render_envoy_yaml(load_config(str(path))))
    admin = cfg["envoy"]["admin_port"]
    start_envoy(st.group, tmp_path / "envoy.yaml", admin, name="envoy-uds")
    wait_until(lambda: http_ok(f"http://127.0.0.1:{admin}/ready"), 30, "envoy ready")
    st.publish_load("edge", kv=0.05)
    st.publish_load("remote", kv=0.05)
    url = f"http://127.0.0.1:{cfg['envoy']['listen_port']}/v1/chat/completions"
    for i in range(4):
        r = http("POST", url, chat_body(f"over a socket {i}"), {"content-type": "application/json"})
        assert r.status == 200, r.body
        assert json.loads(r.body)["aigrid_site"] in ("edge", "remote")
    recs = [rec for s in st.sites for rec in st.records(s)]
    # The processor answered (a decision header on every request), none failed open.
    assert len(recs) == 4 and all("x-aigrid-decision" in rec["headers"] for rec in recs)
    stats = {s["name"].rsplit(".", 1)[1]: s.get("value", 0) for s in
             json.loads(http("GET", f"http://127.0.0.1:{admin}/stats?format=json&filter=ext_proc").body)["stats"]
             if "name" in s}
    assert stats["streams_started"] >= 4 and stats.get("failure_mode_allowed", 0) == 0, stats
    assert os.path.exists(sock)


def test_no_tls_on_a_unix_socket() -> None:
    site = [{"name": "edge", "endpoints": ["127.0.0.1:1"]}]
    tls = {"cert_path": "c", "key_path": "k"}
    with pytest.raises(ValueError, match="does not apply to a Unix socket"):
        GatewayConfig.model_validate({"sites": site, "gateway": {"listen": "unix:/tmp/x.sock", "tls": tls}})
    cfg = GatewayConfig.model_validate({"sites": site, "gateway": {"listen": "unix:/tmp/x.sock"},
                                        "envoy": {"extproc_tls": {"ca_path": "ca"}}})
    with pytest.raises(ValueError, match="does not apply to a Unix socket"):
        render_envoy_config(cfg)
    for bad in ("unix:relative.sock", "unix:", "/tmp/x.sock"):
        with pytest.raises(ValueError):
            GatewayConfig.model_validate({"sites": site, "gateway": {"listen": bad}})
