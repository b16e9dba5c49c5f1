"""Transport security through the real programs: a TLS client listener on Envoy, mutual TLS between Envoy
and the ext_proc server, and TLS from Envoy to a site — certificates from `trustme`."""

from __future__ import annotations

import json
import ssl
import urllib.request

import grpc
import pytest
import trustme
import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc

from extproc.gateway.config import load_config
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.tools.stack.procs import ProcessGroup, free_port, http_ok, port_open, python_argv, start_envoy, start_redis
from harness import chat_body, wait_until

pytestmark = pytest.mark.slow


def _write(d, name: str, blob) -> str:  # type: ignore[no-untyped-def]
    p = d / name
    p.write_bytes(blob.bytes())
    return str(p)


def test_tls_listener_mtls_extproc_and_tls_site(tmp_path) -> None:
    ca = trustme.CA()
    envoy_cert = ca.issue_cert("127.0.0.1", "gateway.test")  # Envoy's listener
    extproc_cert = ca.issue_cert("127.0.0.1")  # the ext_proc server
    envoy_client = ca.issue_cert("envoy-client.test")  # Envoy's client certificate towards ext_proc
    site_cert = ca.issue_cert("127.0.0.1")
    f = {
        "ca": _write(tmp_path, "ca.pem", ca.cert_pem),
        "listener": _write(tmp_path, "l.pem", envoy_cert.cert_chain_pems[0]), "listener_key": _write(tmp_path, "l.key", envoy_cert.private_key_pem),
        "xp": _write(tmp_path, "x.pem", extproc_cert.cert_chain_pems[0]), "xp_key": _write(tmp_path, "x.key", extproc_cert.private_key_pem),
        "cl": _write(tmp_path, "c.pem", envoy_client.cert_chain_pems[0]), "cl_key": _write(tmp_path, "c.key", envoy_client.private_key_pem),
        "site": _write(tmp_path, "s.pem", site_cert.cert_chain_pems[0]), "site_key": _write(tmp_path, "s.key", site_cert.private_key_pem),
    }
    redis_port, site_port, xp_port, metrics_port, envoy_port, admin_port = (free_port() for _ in range(6))
    cfg = {
        "sites": [{"name": "edge", "role": "edge", "endpoints": [f"127.0.0.1:{site_port}"],
                   "tls": {"ca_path": f["ca"], "sni": "127.0.0.1"}}],
        "redis": {"url": f"redis://127.0.0.1:{redis_port}/0"},
        "gateway": {"listen": f"127.0.0.1:{xp_port}", "metrics_listen": f"127.0.0.1:{metrics_port}", "rtt_probe_interval_s": 0,
                    "tls": {"cert_path": f["xp"], "key_path": f["xp_key"], "client_ca_path": f["ca"]}},
        "envoy": {"listen_address": "127.0.0.1", "listen_port": envoy_port, "admin_port": admin_port, "health_check_interval_ms": 500,
                  "listener_tls": {"cert_path": f["listener"], "key_path": f["listener_key"]},
                  "extproc_tls": {"ca_path": f["ca"], "cert_path": f["cl"], "key_path": f["cl_key"]}},
    }
    (tmp_path / "aigrid.yaml").write_text(yaml.safe_dump(cfg))
    config = load_config(str(tmp_path / "aigrid.yaml"))
    (tmp_path / "envoy.yaml").write_text(render_envoy_yaml(config))
    with ProcessGroup(tmp_path / "logs") as g:
        start_redis(g, redis_port)
        site = g.start("site", python_argv("-m", "extproc.tools.stack.standin", "--name", "edge", "--port", str(site_port),
                                           "--tls-cert", f["site"], "--tls-key", f["site_key"]))
        site.wait_ready(lambda: port_open(site_port), 20, "TLS stand-in listening")
        serve = g.start("serve", python_argv("-m", "extproc.cli", "serve", "--config", str(tmp_path / "aigrid.yaml")))
        serve.wait_ready(lambda: port_open(xp_port) and port_open(metrics_port), 30, "ext_proc listening")
        start_envoy(g, tmp_path / "envoy.yaml", admin_port)

        ctx = ssl.create_default_context(cafile=f["ca"])
        req = urllib.request.Request(f"https://127.0.0.1:{envoy_port}/v1/chat/completions", data=chat_body("over tls"),
                                     headers={"content-type": "application/json"}, method="POST")

        def served() -> bool:
            try:
                with urllib.request.urlopen(req, context=ctx, timeout=5) as r:  # noqa: S310
                    return r.status == 200 and r.headers.get("x-served-by") == "edge"
            except OSError:
                return False

        wait_until(served, 20, "a request through TLS listener → mTLS ext_proc → TLS site")
        # ext_proc routed it (over mutual TLS): the decision is counted, and Envoy saw no ext_proc failure.
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()  # noqa: S310
        assert 'aigrid_decisions_total{site="edge"' in metrics
        stats = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/stats?format=json&filter=ext_proc", timeout=5).read())  # noqa: S310
        vals = {s["name"]: s.get("value", 0) for s in stats["stats"]}
        assert vals.get("http.aigrid.ext_proc.aigrid.failure_mode_allowed", 0) == 0
        assert vals.get("http.aigrid.ext_proc.aigrid.streams_started", 0) >= 1
        # Plain HTTP on the TLS listener gets no answer.
        assert not http_ok(f"http://127.0.0.1:{envoy_port}/v1/models", timeout=2)

        # The ext_proc port refuses a client without a certificate signed by the CA.
        for creds in (grpc.ssl_channel_credentials(root_certificates=open(f["ca"], "rb").read()),):
            ch = grpc.secure_channel(f"127.0.0.1:{xp_port}", creds)
            stub = ep_grpc.ExternalProcessorStub(ch)
            with pytest.raises(grpc.RpcError) as e:
                list(stub.Process(iter([ep.ProcessingRequest()]), timeout=5))
            assert e.value.code() == grpc.StatusCode.UNAVAILABLE
            ch.close()
        ch = grpc.insecure_channel(f"127.0.0.1:{xp_port}")
        with pytest.raises(grpc.RpcError):
            list(ep_grpc.ExternalProcessorStub(ch).Process(iter([ep.ProcessingRequest()]), timeout=5))
        ch.close()


def test_rendered_tls_options_validate(tmp_path) -> None:
    """mTLS on the listener, a site over TLS with a client certificate and a DNS name: Envoy accepts it."""
    import subprocess

    from extproc.gateway.config.load import load_config_text
    from extproc.gateway.envoyconf.render import render_envoy_config
    from extproc.tools.stack.procs import envoy_binary

    ca = trustme.CA()
    leaf = ca.issue_cert("gpu1.example.internal")
    c, k, a = _write(tmp_path, "c.pem", leaf.cert_chain_pems[0]), _write(tmp_path, "k.pem", leaf.private_key_pem), _write(tmp_path, "ca.pem", ca.cert_pem)
    text = f"""
sites:
  - name: edge
    role: edge
    endpoints: ["gpu1.example.internal:8443"]
    tls: {{ca_path: {a}, cert_path: {c}, key_path: {k}}}
  - name: remote
    endpoints: ["127.0.0.1:8002"]
envoy:
  listener_tls: {{cert_path: {c}, key_path: {k}, client_ca_path: {a}}}
"""
    cfg = load_config_text(text)
    doc = render_envoy_config(cfg)
    edge = next(x for x in doc["static_resources"]["clusters"] if x["name"] == "site_edge")
    ts = edge["transport_socket"]["typed_config"]
    assert ts["sni"] == "gpu1.example.internal"
    assert ts["common_tls_context"]["validation_context"]["match_typed_subject_alt_names"][0]["matcher"] == {"exact": "gpu1.example.internal"}
    remote = next(x for x in doc["static_resources"]["clusters"] if x["name"] == "site_remote")
    assert "transport_socket" not in remote
    chain = doc["static_resources"]["listeners"][0]["filter_chains"][0]
    assert chain["transport_socket"]["typed_config"]["require_client_certificate"] is True
    p = tmp_path / "envoy.yaml"
    p.write_text(render_envoy_yaml(cfg))
    r = subprocess.run([envoy_binary(), "--mode", "validate", "-c", str(p), "--disable-hot-restart"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]


def test_client_tls_needs_cert_and_key_together() -> None:
    from pydantic import ValidationError

    from extproc.gateway.config.trust import ClientTls

    with pytest.raises(ValidationError, match="cert_path and key_path go together"):
        ClientTls(ca_path="/ca.pem", cert_path="/c.pem")
