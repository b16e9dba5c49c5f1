"""The Redis ACL that deploy/k8s/redis_secret.py writes, against a real redis-server: every role does its
job through the project's own Redis code (agent publisher, gateway map reader, operator drain), and no
role can do another's writes. The default user is off."""

from __future__ import annotations

import asyncio
import time

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from deploytools import DEPLOY, load_script
from extproc.agent.publisher import Outgoing, Publisher
from extproc.gateway.config.schema import GatewayConfig
from extproc.wire.redisconn.settings import RedisSettings
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.wire.loadreport.codec import encode_report
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.loadreport.load_report_pb2 import EngineStats, NodeLoadReport
from extproc.gateway.operator.drain import set_drained
from extproc.tools.stack.procs import ProcessGroup, free_port, port_open, redis_binary

secret = load_script(DEPLOY / "k8s" / "redis_secret.py")
PASSWORDS = {"gateway": "gw-pass-1", "agent": "agent-pass-1", "operator": "op-pass-1", "admin": "admin-pass-1"}


@pytest.fixture
def acl_redis(tmp_path):
    port = free_port()
    values = secret.secret_values(f"127.0.0.1:{port}", "aigrid", PASSWORDS)
    acl = tmp_path / "users.acl"
    acl.write_text(values["users.acl"], encoding="utf-8")
    group = ProcessGroup(tmp_path / "logs")
    p = group.start("redis", [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                              "--appendonly", "no", "--dir", str(tmp_path), "--aclfile", str(acl)])
    p.wait_ready(lambda: port_open(port), 10, f"listening on 127.0.0.1:{port}")
    yield values, port
    group.stop_all()


def _report(seq: int) -> bytes:
    return encode_report(NodeLoadReport(
        site="edge", node="n1", agent_id="a1", sequence=seq, sent_unix_ms=int(time.time() * 1000),
        interval_ms=250, ttl_ms=5000, healthy=True,
        engine=EngineStats(endpoints=1, requests_running=3, requests_waiting=0, kv_cache_usage=0.2)))


def _config(url: str) -> GatewayConfig:
    return GatewayConfig.model_validate({"sites": [{"name": "edge", "endpoints": ["127.0.0.1:1"]}],
                                         "redis": {"url": url, "resync_interval_s": 0.2}})


async def test_each_role_does_its_job(acl_redis):
    values, _ = acl_redis
    keys = RedisKeys("aigrid")
    # The gateway subscribes and resyncs with its own user...
    reader = LoadMapReader(RedisSettings(url=values["gateway-url"], resync_interval_s=0.2))
    reader.start()
    try:
        # ...the agent publishes with its own...
        pub = Publisher(RedisSettings(url=values["agent-url"]))
        await pub.send(Outgoing(keys.report("edge", "n1"), _report(1), 5000, keys.site_reports_channel("edge")))
        for _ in range(200):
            snap = reader.snapshot
            if snap.connected and "edge" in snap.sites:
                break
            await asyncio.sleep(0.02)
        assert "edge" in reader.snapshot.sites, "the gateway never saw the agent's report"
        # ...and the operator drains with its own; the gateway sees the drain.
        assert await asyncio.to_thread(set_drained, _config(values["operator-url"]), "edge", True)
        for _ in range(200):
            if "edge" in reader.snapshot.drained:
                break
            await asyncio.sleep(0.02)
        assert "edge" in reader.snapshot.drained
        # One full read (what `aigrid status` does) with the operator's user.
        snap = await LoadMapReader(_config(values["operator-url"]).redis).read_once()
        assert "edge" in snap.sites and "edge" in snap.drained
    finally:
        await reader.stop()


def test_roles_cannot_do_each_others_writes(acl_redis):
    values, port = acl_redis
    keys = RedisKeys("aigrid")
    # An agent cannot drain a site, nor write outside its report keys.
    with pytest.raises(redis.exceptions.NoPermissionError):
        set_drained(_config(values["agent-url"]), "edge", True)
    agent = redis.Redis.from_url(values["agent-url"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        agent.set("aigrid:drained", b"x")
    with pytest.raises(redis.exceptions.NoPermissionError):
        agent.get(keys.report("edge", "n1"))
    # A gateway reads, never writes.
    gw = redis.Redis.from_url(values["gateway-url"])
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.set(keys.report("edge", "n1"), b"forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.publish(keys.reports_channel, b"forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.publish(keys.site_reports_channel("edge"), b"forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.publish(keys.control_channel, b"forged")
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.flushall()
    # ...except its in-flight counts, on their own channel (gateway replicas exchange them).
    assert gw.publish(keys.in_flight_channel, b'{"g": "gw", "s": {}}') == 0
    # Nobody gets in without a user (default off), and a wrong password fails.
    # (no retries: redis-py retries connection errors, and an authentication error is one)
    once = Retry(NoBackoff(), 0)
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, retry=once).ping()
    with pytest.raises(redis.exceptions.AuthenticationError):
        redis.Redis(port=port, username="gateway", password="wrong", retry=once).ping()
    for c in (agent, gw):
        c.close()


def test_acl_file_keeps_no_plaintext_password():
    values = secret.secret_values("h:6379", "aigrid", PASSWORDS)
    for pw in PASSWORDS.values():
        assert pw not in values["users.acl"]
        assert sum(pw in v for v in values.values()) == 1  # only in its own URL


def test_rotation_without_downtime(acl_redis, tmp_path):
    """docs/runbook.md's rotation: a transition ACL accepts old and new passwords, ACL LOAD applies it
    (admin user) while clients move to the new URLs, then a final ACL drops the old ones."""
    old, port = acl_redis
    acl = tmp_path / "users.acl"  # the file the fixture's redis-server was started with
    once = Retry(NoBackoff(), 0)

    def ping(url: str) -> bool:
        c = redis.Redis.from_url(url, retry=once)
        try:
            return bool(c.ping())
        except redis.exceptions.AuthenticationError:
            return False
        finally:
            c.close()

    new_pw = {"gateway": "gw-pass-2", "agent": "agent-pass-2", "operator": "op-pass-2", "admin": "admin-pass-2"}
    transition = secret.secret_values(f"127.0.0.1:{port}", "aigrid", new_pw, also_accept_acl=old["users.acl"])
    acl.write_text(transition["users.acl"], encoding="utf-8")
    admin = redis.Redis.from_url(old["admin-url"], retry=once)
    assert admin.execute_command("ACL", "LOAD") in (b"OK", "OK", True)
    for role in ("gateway", "agent", "operator"):
        assert ping(old[f"{role}-url"]) and ping(transition[f"{role}-url"]), role
    # The last step as the runbook types it: the script, reusing the new passwords, accepting nothing else.
    new_dir, final_dir = tmp_path / "new", tmp_path / "final"
    new_dir.mkdir()
    for key, value in transition.items():
        (new_dir / key).write_text(value, encoding="utf-8")
    assert secret.main(["--host", f"127.0.0.1:{port}", "--reuse", str(new_dir), "--out-dir", str(final_dir)]) == 0
    final = {f.name: f.read_text(encoding="utf-8") for f in final_dir.iterdir()}
    assert {k: v for k, v in final.items() if k.endswith("-url")} == {k: v for k, v in transition.items() if k.endswith("-url")}
    acl.write_text(final["users.acl"], encoding="utf-8")
    admin2 = redis.Redis.from_url(final["admin-url"], retry=once)
    admin2.execute_command("ACL", "LOAD")
    for role in ("gateway", "agent", "operator", "admin"):
        assert ping(final[f"{role}-url"]) and not ping(old[f"{role}-url"]), role
    # Only the admin user may reload the ACL; it may touch no key.
    gw = redis.Redis.from_url(final["gateway-url"], retry=once)
    with pytest.raises(redis.exceptions.NoPermissionError):
        gw.execute_command("ACL", "LOAD")
    with pytest.raises(redis.exceptions.NoPermissionError):
        admin2.get("aigrid:drained")
    for c in (admin, admin2, gw):
        c.close()


def test_runbook_commands_with_the_operator_url(acl_redis):
    """The runbook's drain / status / undrain command lines, as typed, against the ACL'd Redis: the URL
    comes from $AIGRID_REDIS_URL, the config is the Kubernetes one."""
    import os
    import subprocess
    import sys

    values, _ = acl_redis
    env = {**os.environ, "AIGRID_REDIS_URL": values["operator-url"]}
    cfg = str(DEPLOY / "k8s" / "base" / "aigrid.yaml")
    aigrid = [sys.executable, "-m", "extproc.cli"]

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*aigrid, *args], capture_output=True, text=True, env=env, timeout=60)

    r = run("site", "drain", "edge", "-c", cfg)
    assert r.returncode == 0 and "site edge drained" in r.stdout, r.stderr
    r = run("status", "-c", cfg)
    assert r.returncode == 0 and "edge" in r.stdout, r.stderr
    r = run("site", "undrain", "edge", "-c", cfg)
    assert r.returncode == 0 and "site edge undrained" in r.stdout, r.stderr
    # The gateway's URL may not drain.
    env["AIGRID_REDIS_URL"] = values["gateway-url"]
    r = run("site", "drain", "edge", "-c", cfg)
    assert r.returncode == 1 and "no permissions" in r.stderr, r.stderr
    # An error names the Redis it tried, never its password (the URL comes from a Secret).
    assert "gw-pass-1" not in r.stderr + r.stdout and "gateway:***@" in r.stderr
