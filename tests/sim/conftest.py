"""Shared fixtures for the simulator tests: real HTTP servers on loopback, free ports."""

from __future__ import annotations

from typing import Any, AsyncIterator, Callable, Awaitable

import pytest

from extproc.tools.sim import SimSite, SimSiteConfig, start_sim_site
from extproc.tools.stack.procs import free_port


@pytest.fixture
async def make_site() -> AsyncIterator[Callable[..., Awaitable[SimSite]]]:
    """Start sites with SimSiteConfig overrides; every site is stopped at the end of the test."""
    sites: list[SimSite] = []

    async def _make(**kw: Any) -> SimSite:
        kw.setdefault("name", "test")
        kw.setdefault("port", free_port())
        # A fast GPU keeps the HTTP tests short; timing is never asserted.
        kw.setdefault("speed_factor", 20.0)
        site = await start_sim_site(SimSiteConfig(**kw))
        sites.append(site)
        return site

    yield _make
    for s in sites:
        await s.stop()


@pytest.fixture
async def site(make_site: Callable[..., Awaitable[SimSite]]) -> SimSite:
    return await make_site()
