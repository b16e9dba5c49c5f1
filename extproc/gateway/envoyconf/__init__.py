"""Rendering Envoy's configuration from aigrid.yaml (`aigrid envoy-config`)."""

from extproc.gateway.envoyconf.render import render_envoy_config, render_envoy_yaml

__all__ = ["render_envoy_config", "render_envoy_yaml"]
