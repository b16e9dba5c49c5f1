"""Reading aigrid.yaml: --config, else $AIGRID_CONFIG, else ./aigrid.yaml. Errors name the key and reason.

$AIGRID_REDIS_URL, when set, replaces `redis.url`: the URL carries the Redis password, which belongs in a
secret store (a Kubernetes Secret as an environment variable), not in the config file or a ConfigMap."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from extproc.gateway.config.schema import GatewayConfig
from extproc.wire.redisconn.settings import REDIS_URL_ENV_VAR

ENV_VAR = "AIGRID_CONFIG"
log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration problem, worded for the operator: which file, which key, why."""


def _format_validation(source: str, err: ValidationError) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(top level)"
        lines.append(f"  {loc}: {e['msg']}")
    return "\n".join(lines)


def load_config_text(text: str, source: str = "<config>") -> GatewayConfig:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(source, exc)) from None
    for message in config.deprecations():
        log.warning("%s: %s", source, message)
    return config


def resolve_config_path(explicit: str | None) -> Path:
    if explicit:
        return Path(explicit)
    env = os.environ.get(ENV_VAR)
    if env:
        return Path(env)
    return Path("aigrid.yaml")


def load_config(explicit: str | None = None) -> GatewayConfig:
    path = resolve_config_path(explicit)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: config file not found (use --config FILE or set {ENV_VAR}; "
            "`aigrid up` writes a local example)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from None
    return with_env_overrides(load_config_text(text, str(path)))


def with_env_overrides(config: GatewayConfig) -> GatewayConfig:
    """The config with `redis.url` taken from $AIGRID_REDIS_URL when that is set and not empty."""
    url = os.environ.get(REDIS_URL_ENV_VAR, "").strip()
    if not url:
        return config
    return config.model_copy(update={"redis": config.redis.model_copy(update={"url": url})})


def add_config_arg(p: argparse.ArgumentParser) -> None:
    """The --config option every command that reads aigrid.yaml takes."""
    p.add_argument("--config", "-c", help=f"aigrid.yaml (default: ${ENV_VAR}, else ./aigrid.yaml)")
