"""Fixtures for the load-agent tests (defined in agent_helpers.py, which tests import helpers from)."""

from agent_helpers import metrics_server, redis_proc  # noqa: F401  (pytest fixtures)
