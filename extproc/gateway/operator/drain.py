"""Drain state lives in one Redis set; a publish on the control channel makes every gateway re-read it
at once (the periodic resync catches a lost message)."""

from __future__ import annotations

import redis

from extproc.gateway.config.schema import GatewayConfig
from extproc.wire.loadreport.keys import RedisKeys


def set_drained(config: GatewayConfig, site: str, drained: bool) -> bool:
    """Drain or undrain `site`; returns whether the state changed. Raises KeyError for an unknown site."""
    config.site(site)  # unknown site → KeyError, before touching Redis
    keys = RedisKeys(config.redis.key_prefix)
    client = redis.Redis.from_url(
        config.redis.url, socket_connect_timeout=config.redis.connect_timeout_s, socket_timeout=5
    )
    try:
        changed = client.sadd(keys.drained, site) if drained else client.srem(keys.drained, site)
        client.publish(keys.control_channel, f"{'drain' if drained else 'undrain'} {site}")
        return bool(changed)
    finally:
        client.close()
