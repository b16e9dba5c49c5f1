"""Shared fixtures for the simulator tests: real HTTP servers on loopback, free ports."""

from __future__ import annotations

import socket
from typing import Any, AsyncIterator, Callable, Awaitable

import pytest

from extproc.sim import SimSite, SiteConfig, start_sim_site


def free_port() -> int:
    """A port nobody listens on right now (bind to port 0, read it back, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
async def make_site() -> AsyncIterator[Callable[..., Awaitable[SimSite]]]:
    """Start sites with SiteConfig overrides; every site is stopped at the end of the test."""
    sites: list[SimSite] = []

    async def _make(**kw: Any) -> SimSite:
        kw.setdefault("name", "test")
        kw.setdefault("port", free_port())
        # A fast GPU keeps the HTTP tests short; timing is never asserted.
        kw.setdefault("speed_factor", 20.0)
        site = await start_sim_site(SiteConfig(**kw))
        sites.append(site)
        return site

    yield _make
    for s in sites:
        await s.stop()


@pytest.fixture
async def site(make_site: Callable[..., Awaitable[SimSite]]) -> SimSite:
    return await make_site()
