from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from simstack import make_sim_stack  # noqa: E402
from harness import Stack  # noqa: E402


@pytest.fixture
def sim_stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def factory(sites: tuple[str, ...] = ("edge", "remote")) -> Stack:
        st = make_sim_stack(tmp_path / f"simstack{len(made)}", sites)
        made.append(st)
        return st

    yield factory
    for st in made:
        st.group.stop_all()
