"""Fixtures of the fault-injection suite; the helpers live in faultkit.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from extproc.stack.local import LocalStack, SiteSpec
from faultkit import SIM_SITES, make_grid  # type: ignore[import-not-found]


@pytest.fixture
def grid(tmp_path: Path) -> Iterator[Callable[..., LocalStack]]:
    made: list[LocalStack] = []

    def make(upstream: str = "standin", sites: tuple[SiteSpec, ...] | None = None, **overrides: dict) -> LocalStack:
        st = make_grid(tmp_path / f"grid{len(made)}", upstream, sites, overrides)
        made.append(st)
        return st

    yield make
    for st in made:
        st.stop()


@pytest.fixture(scope="module")
def sim_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """Simulated GPU sites with their agents, Redis, ext_proc and Envoy: shared by a module's scenarios,
    each of which leaves it healthy again."""
    st = make_grid(tmp_path_factory.mktemp("simgrid"), "sim", SIM_SITES, {"gateway": {"rtt_probe_interval_s": 0.5}})
    yield st
    st.stop()
