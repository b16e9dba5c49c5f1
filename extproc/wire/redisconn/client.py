"""Building Redis clients from the configured URL.

- `redis://[user:password@]host:port/db` — AUTH/ACL through user:password; `rediss://` for TLS.
- `redis+sentinel://[user:password@]s1:26379,s2:26379/<service>[/db]` — the master of <service> as the
  Sentinels name it, followed across failovers; `rediss+sentinel://` for TLS to the Sentinels and the
  master. Query `sentinel_username=`/`sentinel_password=` when the Sentinels have their own ACL.
- `redis+cluster://[user:password@]n1:6379,n2:6379` — Redis Cluster from these seed nodes;
  `rediss+cluster://` for TLS.
Query parameters `ssl_ca_certs=`, `ssl_certfile=`, `ssl_keyfile=`, `ssl_cert_reqs=` apply to TLS forms.
"""

from __future__ import annotations

from urllib.parse import parse_qs, unquote

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, ClusterPubSub, RedisCluster
from redis.asyncio.sentinel import Sentinel

from extproc.wire.redisconn.settings import RedisSettings

_TLS_KEYS = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")


def _timeouts(settings: RedisSettings) -> dict[str, object]:
    # Short socket timeouts: a Redis that stops answering must turn into a reconnect, not a hung task.
    return {
        "socket_connect_timeout": settings.connect_timeout_s,
        "socket_timeout": max(settings.connect_timeout_s, 2.0),
    }


def _split_multi(url: str) -> tuple[str, str | None, str | None, list[tuple[str, int]], str, dict[str, str]]:
    """scheme, username, password, [(host, port)], path, query for the comma-separated-hosts URL forms."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(f"redis URL {redacted_url(url)!r} has no scheme")
    rest, _, query = rest.partition("?")
    netloc, slash, path = rest.partition("/")
    user = password = None
    if "@" in netloc:
        creds, _, netloc = netloc.rpartition("@")
        u, colon, p = creds.partition(":")
        user = unquote(u) or None
        password = unquote(p) if colon else None
    hosts: list[tuple[str, int]] = []
    for hp in netloc.split(","):
        host, _, port = hp.strip().rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"redis URL {redacted_url(url)!r}: {hp!r} is not host:port")
        hosts.append((host.strip("[]"), int(port)))
    q = {k: v[-1] for k, v in parse_qs(query).items()}
    return scheme, user, password, hosts, path if slash else "", q


def make_async_client(settings: RedisSettings) -> aioredis.Redis:
    url = settings.url
    scheme = url.partition("://")[0].lower()
    if scheme in ("redis+sentinel", "rediss+sentinel"):
        return _sentinel_client(settings)
    if scheme in ("redis+cluster", "rediss+cluster"):
        return _cluster_client(settings)  # type: ignore[return-value]
    return aioredis.from_url(url, health_check_interval=0, decode_responses=False, **_timeouts(settings))


def _tls(scheme: str, q: dict[str, str]) -> dict[str, object]:
    if not scheme.startswith("rediss"):
        return {}
    out: dict[str, object] = {"ssl": True}
    out.update({k: q[k] for k in _TLS_KEYS if k in q})
    return out


def _sentinel_client(settings: RedisSettings) -> aioredis.Redis:
    scheme, user, password, hosts, path, q = _split_multi(settings.url)
    parts = [p for p in path.split("/") if p]
    if not parts:
        raise ValueError("redis+sentinel URL needs the service name as its path, e.g. .../mymaster")
    service = parts[0]
    db = int(parts[1]) if len(parts) > 1 else 0
    tls = _tls(scheme, q)
    sentinel_kwargs: dict[str, object] = {**_timeouts(settings), **tls}
    if "sentinel_password" in q:
        sentinel_kwargs["password"] = q["sentinel_password"]
    if "sentinel_username" in q:
        sentinel_kwargs["username"] = q["sentinel_username"]
    sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **_timeouts(settings), **tls)
    return sentinel.master_for(
        service, username=user, password=password, db=db, decode_responses=False, health_check_interval=0
    )


class _ClusterPubSub(ClusterPubSub):
    async def execute_command(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        # redis-py's cluster pub/sub picks its node from the slot map, which is empty until the cluster
        # client's first command; a subscriber that starts with SUBSCRIBE must load it first (idempotent).
        await self.cluster.initialize()
        return await super().execute_command(*args, **kwargs)


class _RedisCluster(RedisCluster):
    def pubsub(self, node=None, host=None, port=None, **kwargs):  # type: ignore[no-untyped-def]
        return _ClusterPubSub(self, node=node, host=host, port=port, **kwargs)


def is_cluster(client: object) -> bool:
    return isinstance(client, RedisCluster)


def _cluster_client(settings: RedisSettings) -> RedisCluster:
    scheme, user, password, hosts, _, q = _split_multi(settings.url)
    return _RedisCluster(
        startup_nodes=[ClusterNode(h, p) for h, p in hosts],
        username=user,
        password=password,
        decode_responses=False,
        **_timeouts(settings),
        **_tls(scheme, q),
    )


def redacted_url(url: str) -> str:
    """The URL without its password (and without query secrets), for logs."""
    base, _, query = url.partition("?")
    if "@" in base:
        scheme, _, rest = base.partition("://")
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        base = f"{scheme}://{user + ':***' if user else '***'}@{host}"
    return base + ("?..." if query else "")
