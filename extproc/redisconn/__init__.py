"""Building Redis clients from the configured URL (AUTH/ACL via user:password@, TLS via rediss://)."""

from __future__ import annotations

import redis.asyncio as aioredis

from extproc.config.schema import RedisSettings


def make_async_client(settings: RedisSettings) -> aioredis.Redis:
    # Short socket timeouts: a Redis that stops answering must turn into a reconnect, not a hung task.
    return aioredis.from_url(
        settings.url,
        socket_connect_timeout=settings.connect_timeout_s,
        socket_timeout=max(settings.connect_timeout_s, 2.0),
        health_check_interval=0,
        decode_responses=False,
    )
