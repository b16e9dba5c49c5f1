"""Shared fixtures. `stack_factory` builds real local stacks (see harness.py) and always tears them down."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from harness import Stack, make_stack  # noqa: E402
from extproc.tools.stack.procs import ProcessGroup, free_port, start_redis  # noqa: E402


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def factory(sites: tuple[str, ...] = ("edge", "remote")) -> Stack:
        st = make_stack(tmp_path / f"stack{len(made)}", sites)
        made.append(st)
        return st

    yield factory
    for st in made:
        for s in st.inprocess:
            s.stop()
        st.group.stop_all()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[tuple[ProcessGroup, int]]:
    """A real redis-server on a free port: (its process group, port)."""
    group = ProcessGroup(tmp_path / "redis-logs")
    port = free_port()
    start_redis(group, port)
    yield group, port
    group.stop_all()
