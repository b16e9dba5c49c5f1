"""TLS to a real `redis-server --tls-port` (client certificates required) with the shipped ACL file
(deploy/redis/users.acl): the gateway reads and subscribes, each agent writes only its own site's keys
and channel, the operator only the drain set — and every one of them is refused anything else."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from urllib.parse import quote

import pytest
import redis
import trustme

from extproc.agent.publisher import Publisher
from extproc.wire.redisconn.settings import RedisSettings
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.wire.loadreport import EngineStats, GpuStats, NodeLoadReport, RedisKeys, encode_report
from extproc.tools.stack.procs import ProcessGroup, free_port, port_open, start_redis

REPO = Path(__file__).resolve().parents[2]
PASSWORDS = {"aigrid-gateway": "change-me-gateway", "aigrid-agent-edge": "change-me-edge",
             "aigrid-agent-remote": "change-me-remote", "aigrid-operator": "change-me-operator"}
KEYS = RedisKeys("aigrid")


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory):  # type: ignore[no-untyped-def]
    d = tmp_path_factory.mktemp("redis-tls")
    ca = trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("aigrid-client")
    files = {}
    for name, blob in (("ca.pem", ca.cert_pem), ("server.pem", server.cert_chain_pems[0]),
                       ("server.key", server.private_key_pem), ("client.pem", client.cert_chain_pems[0]),
                       ("client.key", client.private_key_pem)):
        (d / name).write_bytes(blob.bytes())
        files[name] = str(d / name)
    port = free_port()
    group = ProcessGroup(d / "logs")
    proc = start_redis(group, 0, extra=[
        "--tls-port", str(port), "--tls-cert-file", files["server.pem"], "--tls-key-file", files["server.key"],
        "--tls-ca-cert-file", files["ca.pem"], "--tls-auth-clients", "yes",
        "--aclfile", str(REPO / "deploy" / "redis" / "users.acl"),
    ])
    proc.wait_ready(lambda: port_open(port), 10, "TLS port open")
    yield port, files
    group.stop_all()


def _url(port: int, files: dict, user: str | None, *, client_cert: bool = True) -> str:
    q = f"ssl_ca_certs={quote(files['ca.pem'])}&ssl_cert_reqs=required"
    if client_cert:
        q += f"&ssl_certfile={quote(files['client.pem'])}&ssl_keyfile={quote(files['client.key'])}"
    creds = f"{user}:{PASSWORDS[user]}@" if user else ""
    return f"rediss://{creds}127.0.0.1:{port}/0?{q}"


def _sync(port: int, files: dict, user: str | None) -> redis.Redis:
    return redis.Redis.from_url(_url(port, files, user), socket_timeout=3)


def _report(site: str, node: str = "n1") -> bytes:
    return encode_report(NodeLoadReport(
        site=site, node=node, agent_id="a1", sequence=1, sent_unix_ms=int(time.time() * 1000), interval_ms=250,
        ttl_ms=10_000, healthy=True,
        gpus=[GpuStats(index=0, name="sim", utilization=0.5, memory_used_bytes=1, memory_total_bytes=2)],
        engine=EngineStats(endpoints=1, requests_running=3, requests_waiting=0, kv_cache_usage=0.4),
    ))


async def test_gateway_sees_agent_reports_and_drains_over_tls_with_least_privilege(tls_redis) -> None:
    port, files = tls_redis
    reader = LoadMapReader(RedisSettings(url=_url(port, files, "aigrid-gateway"), resync_interval_s=0.5))
    reader.start()
    pub = Publisher(RedisSettings(url=_url(port, files, "aigrid-agent-edge")))
    task = asyncio.create_task(pub.run())
    try:
        pub.offer(KEYS.report("edge", "n1"), _report("edge"), 10_000, KEYS.site_reports_channel("edge"))
        for _ in range(100):
            if "edge" in reader.snapshot.sites:
                break
            await asyncio.sleep(0.05)
        assert reader.connected and pub.sent >= 1 and pub.failures == 0
        assert reader.snapshot.sites["edge"].requests_running == 3
        op = _sync(port, files, "aigrid-operator")
        op.sadd(KEYS.drained, "edge")
        op.publish(KEYS.control_channel, "drain edge")
        for _ in range(100):
            if "edge" in reader.snapshot.drained:
                break
            await asyncio.sleep(0.05)
        assert "edge" in reader.snapshot.drained
        op.close()
    finally:
        pub.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await reader.stop()


async def test_an_agent_cannot_publish_or_write_another_sites_report(tls_redis) -> None:
    """The edge agent's credentials, used (by mistake or malice) for a report of site remote: Redis refuses
    both the key and the channel, the agent counts the refusal, and the gateway never sees it; the remote
    site's own agent still reaches the gateway beside edge's (the gateway reads every site)."""
    port, files = tls_redis
    reader = LoadMapReader(RedisSettings(url=_url(port, files, "aigrid-gateway"), resync_interval_s=0.3))
    reader.start()
    edge = Publisher(RedisSettings(url=_url(port, files, "aigrid-agent-edge")))
    remote = Publisher(RedisSettings(url=_url(port, files, "aigrid-agent-remote")))
    pubs = [edge, remote]
    tasks = [asyncio.create_task(p.run()) for p in pubs]
    try:
        forged = _report("remote", "forged")
        edge.offer(KEYS.report("remote", "forged"), forged, 10_000, KEYS.site_reports_channel("remote"))
        for _ in range(100):
            if edge.refused:
                break
            await asyncio.sleep(0.05)
        assert edge.refused >= 1 and edge.sent == 0
        # Not even the shared channel of before the upgrade, nor edge's own channel, carries it.
        agent = _sync(port, files, "aigrid-agent-edge")
        for cmd in (("SET", KEYS.report("remote", "forged"), forged, "PX", 10_000),
                    ("PUBLISH", KEYS.site_reports_channel("remote"), forged),
                    ("PUBLISH", KEYS.reports_channel, forged)):
            with pytest.raises(redis.exceptions.NoPermissionError):
                agent.execute_command(*cmd)
        # On its own channel Redis lets it through, and the gateway refuses and counts it.
        rejected = reader.refused["wrong_channel"]
        for _ in range(100):  # the reader's PSUBSCRIBE may still be on its way
            agent.publish(KEYS.site_reports_channel("edge"), forged)
            if reader.refused["wrong_channel"] > rejected:
                break
            await asyncio.sleep(0.05)
        agent.close()
        assert reader.refused["wrong_channel"] > rejected
        edge.stop()
        edge2 = Publisher(RedisSettings(url=_url(port, files, "aigrid-agent-edge")))
        pubs.append(edge2)
        tasks.append(asyncio.create_task(edge2.run()))
        edge2.offer(KEYS.report("edge", "n1"), _report("edge"), 10_000, KEYS.site_reports_channel("edge"))
        remote.offer(KEYS.report("remote", "n1"), _report("remote"), 10_000, KEYS.site_reports_channel("remote"))
        for _ in range(100):
            if {"edge", "remote"} <= reader.snapshot.sites.keys():
                break
            await asyncio.sleep(0.05)
        assert {"edge", "remote"} <= reader.snapshot.sites.keys()
        resyncs = reader.resyncs
        for _ in range(100):
            if reader.resyncs >= resyncs + 1:
                break
            await asyncio.sleep(0.05)
        assert reader.snapshot.sites["remote"].nodes == 1  # n1 only: the forged node never got in
        assert edge2.refused == 0 and remote.refused == 0
    finally:
        for p in pubs:
            p.stop()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await reader.stop()


@pytest.mark.parametrize(
    ("user", "allowed", "refused"),
    [
        ("aigrid-gateway",
         [("GET", KEYS.report("edge", "n1")), ("SMEMBERS", KEYS.drained), ("PTTL", KEYS.report("edge", "n1"))],
         [("SET", KEYS.report("edge", "n1"), b"x"), ("SADD", KEYS.drained, "edge"), ("PUBLISH", KEYS.reports_channel, b"x"),
          ("PUBLISH", KEYS.site_reports_channel("edge"), b"x"),
          ("GET", "other:key"), ("FLUSHALL",), ("CONFIG", "GET", "*"), ("KEYS", "*")]),
        ("aigrid-agent-edge",
         [("SET", KEYS.report("edge", "n9"), b"x", "PX", 1000), ("PUBLISH", KEYS.site_reports_channel("edge"), b"x")],
         [("SET", KEYS.report("remote", "n1"), b"x"), ("PUBLISH", KEYS.site_reports_channel("remote"), b"x"),
          ("PUBLISH", KEYS.reports_channel, b"x"), ("GET", KEYS.report("edge", "n9")), ("SADD", KEYS.drained, "edge"),
          ("PUBLISH", KEYS.control_channel, b"x"), ("DEL", KEYS.report("remote", "n1")), ("FLUSHALL",)]),
        ("aigrid-operator",
         [("SADD", KEYS.drained, "x"), ("SREM", KEYS.drained, "x"), ("PUBLISH", KEYS.control_channel, b"undrain x")],
         [("SET", KEYS.report("edge", "n1"), b"x"), ("GET", KEYS.report("edge", "n1")), ("PUBLISH", KEYS.reports_channel, b"x"),
          ("DEL", KEYS.drained), ("FLUSHALL",)]),
    ],
)
def test_each_user_can_do_its_job_and_nothing_else(tls_redis, user: str, allowed: list, refused: list) -> None:
    port, files = tls_redis
    c = _sync(port, files, user)
    try:
        for cmd in allowed:
            c.execute_command(*cmd)
        for cmd in refused:
            with pytest.raises(redis.exceptions.NoPermissionError):
                c.execute_command(*cmd)
    finally:
        c.close()


def test_no_anonymous_access_and_no_plaintext_or_certless_client(tls_redis) -> None:
    port, files = tls_redis
    c = redis.Redis.from_url(_url(port, files, None), socket_timeout=3)
    with pytest.raises((redis.exceptions.AuthenticationError, redis.exceptions.NoPermissionError, redis.exceptions.ResponseError)):
        c.get(KEYS.report("edge", "n1"))
    c.close()
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, username="aigrid-gateway",
                    password=PASSWORDS["aigrid-gateway"]).ping()  # plaintext on the TLS port
    with pytest.raises(redis.exceptions.ConnectionError):
        redis.Redis.from_url(_url(port, files, "aigrid-gateway", client_cert=False), socket_timeout=3).ping()
