"""Gateway configuration: one YAML file (aigrid.yaml), validated with pydantic at start."""

from extproc.config.schema import (
    EnvoySettings,
    GatewayConfig,
    GatewaySettings,
    PolicySettings,
    RedisSettings,
    SiteConfig,
    SiteRole,
)
from extproc.config.load import ConfigError, load_config, load_config_text

__all__ = [
    "ConfigError",
    "EnvoySettings",
    "GatewayConfig",
    "GatewaySettings",
    "PolicySettings",
    "RedisSettings",
    "SiteConfig",
    "SiteRole",
    "load_config",
    "load_config_text",
]
