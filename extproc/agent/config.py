"""The agent's own settings: CLI flags, optionally on top of a YAML file (same keys)."""

from __future__ import annotations

import re
import socket
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.wire.redisconn.settings import RedisSettings
from extproc.wire.contract import SITE_NAME

_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,252}$")


def default_node() -> str:
    """The host name, reduced to the characters a Redis key and a log line take without quoting."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", socket.gethostname()) or "node"
    return name if name[0].isalnum() else "n" + name


def metrics_url(url: str) -> str:
    """`http://host:8000` → `http://host:8000/metrics`; a URL with a path is taken as given."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{url!r} is not an http(s) URL")
    if parts.path in ("", "/"):
        parts = parts._replace(path="/metrics")
    return urlunsplit(parts)


class AgentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: str
    node: str = Field(default_factory=default_node)
    redis: RedisSettings = RedisSettings()
    vllm_urls: list[str] = []
    sglang_urls: list[str] = []
    dcgm_urls: list[str] = []
    nvml: bool = True
    # Publishing cadence. Default well under a second: the policy reacts to load within a few intervals.
    interval_ms: int = Field(default=250, ge=20, le=60_000)
    # TTL of the node's key: a dead agent's node vanishes after this. Default max(2 s, 4 intervals).
    ttl_ms: int | None = Field(default=None, ge=100, le=3_600_000)
    # Per-scrape deadline; a slower endpoint counts as failed for that round.
    scrape_timeout_ms: int = Field(default=500, ge=10, le=60_000)
    # A source with no good sample for this long is listed stale and contributes nothing.
    stale_after_ms: int | None = Field(default=None, ge=10, le=600_000)

    @field_validator("site")
    @classmethod
    def _site(cls, v: str) -> str:
        if not SITE_NAME.match(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63), e.g. 'edge'")
        return v

    @field_validator("node")
    @classmethod
    def _node(cls, v: str) -> str:
        if not _NODE.match(v):
            raise ValueError("must be letters, digits, '_', '.', '-' (at most 253), starting alphanumeric")
        return v

    @field_validator("vllm_urls", "sglang_urls", "dcgm_urls")
    @classmethod
    def _urls(cls, v: list[str]) -> list[str]:
        return [metrics_url(u) for u in v]

    @model_validator(mode="after")
    def _timing(self) -> "AgentConfig":
        if self.ttl_ms is not None and self.ttl_ms < 2 * self.interval_ms:
            raise ValueError("ttl_ms must be at least two intervals, or every hiccup drops the node")
        return self

    @property
    def effective_ttl_ms(self) -> int:
        return self.ttl_ms if self.ttl_ms is not None else max(2000, 4 * self.interval_ms)

    @property
    def effective_stale_after_ms(self) -> int:
        # Two scrape rounds' worth, and never shorter than one scrape deadline plus an interval.
        if self.stale_after_ms is not None:
            return self.stale_after_ms
        return max(1000, 2 * self.interval_ms, self.scrape_timeout_ms + self.interval_ms)
