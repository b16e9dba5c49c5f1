"""Fixtures for tests/reliability; the helpers and fixtures themselves live in faultkit.py."""

from faultkit import grid, sim_grid  # noqa: F401 (pytest finds fixtures in this module's namespace)
