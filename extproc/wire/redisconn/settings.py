"""Redis connection settings: the `redis:` section of aigrid.yaml and of the agent's config (one model for
both), and the environment variable that carries the URL with its password."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# When set and not empty, replaces `redis.url`: the URL carries the Redis password, which belongs in a
# secret store (a Kubernetes Secret as an environment variable), not in a config file or a ConfigMap.
REDIS_URL_ENV_VAR = "AIGRID_REDIS_URL"


class RedisSettings(BaseModel):
    # A typo in a key must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)
    # redis://, rediss:// (TLS), with user:password for AUTH/ACL.
    url: str = "redis://127.0.0.1:6379/0"
    key_prefix: str = Field(default="aigrid", pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Full read of every report, for recovery after a lost pub/sub message or a reconnect.
    resync_interval_s: float = Field(default=2.0, gt=0, le=300)
    connect_timeout_s: float = Field(default=1.0, gt=0, le=60)
    reconnect_max_backoff_s: float = Field(default=5.0, gt=0, le=300)
    # Gateway: also read the shared reports channel that agents from before per-site channels publish on
    # (during an upgrade). Safe to leave on: a push there only names a key to read, and only the site's
    # own agent can write that key. Turn off once every agent publishes on its site's channel.
    read_shared_reports_channel: bool = True
