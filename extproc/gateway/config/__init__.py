"""Gateway configuration: one YAML file (aigrid.yaml), validated with pydantic at start."""

from extproc.gateway.config.load import ConfigError, load_config, load_config_text
from extproc.gateway.config.schema import (
    EnvoySettings,
    GatewayConfig,
    GatewaySettings,
    PolicySettings,
    RedisSettings,
    SiteConfig,
    SiteRole,
)

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
