"""Helpers for the load-agent tests: a real redis-server process and a real HTTP metrics endpoint, both on
loopback and free ports, plus a bounded wait helper (tests wait for conditions, never assert timings)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from aiohttp import web
from extproc.tools.stack.procs import free_port

DATA = Path(__file__).parent / "data"
REPO = Path(__file__).resolve().parents[2]
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


class RedisProc:
    """A redis-server child process that can be killed and restarted on the same port."""

    def __init__(self, port: int, workdir: Path) -> None:
        self.port = port
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.workdir), "--protected-mode", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        client = redis.Redis(port=self.port, socket_connect_timeout=0.2)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.02)
        client.close()

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)
            self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port)


@pytest.fixture
def redis_proc(tmp_path: Path) -> Iterator[RedisProc]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server binary not installed")
    r = RedisProc(free_port(), tmp_path)
    r.start()
    try:
        yield r
    finally:
        r.kill()


@dataclass
class Page:
    body: str | bytes
    status: int = 200
    delay_s: float = 0.0
    content_type: str = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class MetricsServer:
    """A real aiohttp server; tests change `pages[path]` to change what it serves."""

    port: int
    pages: dict[str, Page] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=dict)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
async def metrics_server() -> AsyncIterator[MetricsServer]:
    server = MetricsServer(port=0)

    async def handle(request: web.Request) -> web.StreamResponse:
        server.hits[request.path] = server.hits.get(request.path, 0) + 1
        page = server.pages.get(request.path)
        if page is None:
            return web.Response(status=404, text="not found\n")
        if page.delay_s:
            await asyncio.sleep(page.delay_s)
        body = page.body.encode() if isinstance(page.body, str) else page.body
        return web.Response(status=page.status, body=body, headers={"Content-Type": page.content_type})

    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield server
    finally:
        await runner.cleanup()


def data(name: str) -> str:
    return (DATA / name).read_text(encoding="utf-8")


async def wait_for(cond: Callable[[], bool], timeout_s: float = 20.0, what: str = "condition") -> None:
    """Poll until cond() holds; the deadline only bounds a broken test, it is not a timing assertion."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


def agent_subprocess(args: list[str]) -> subprocess.Popen[bytes]:
    """`aigrid agent ...` as a real separate process (so it can be killed -9)."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "agent", *args],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )


@contextlib.asynccontextmanager
async def reading(s) -> AsyncIterator:  # type: ignore[no-untyped-def]
    """A gateway's load map reader on `s` (RedisSettings) for the body of the block."""
    from extproc.gateway.loadmap.reader import LoadMapReader

    reader = LoadMapReader(s)
    reader.start()
    try:
        yield reader
    finally:
        # Bounded: redis-py can swallow a cancellation delivered mid-command (see Publisher.stop), and
        # the reader's loop would then not end.
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(reader.stop(), 5)
