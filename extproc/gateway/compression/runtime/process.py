"""The fine-step model worker in a child process, supervised.

In a thread, the model shares the gateway's GIL: between torch kernels it holds the interpreter, and the
gRPC loop's routing answers wait (measured: p99 routing latency x1.4-2.0 while compressing, on 2 cores).
In a child process the gateway only pickles texts across a pipe. The child runs the same
BatchingCompressor (batching, deadlines, bounded queue); the parent adds its own in-flight bound and a
deadline, so a stuck or dead child turns into skipped compressions, never into waiting requests.

A child that dies (a crash, an OOM kill, `kill -9`) is started again by a supervisor thread, with
exponential backoff (`RespawnBackoff`), a log line for each death and each restart, and the counts that
`/metrics` shows (`aigrid_compression_worker_restarts_total`, `aigrid_compression_worker_up`). Meanwhile
every request goes on uncompressed (`Skipped("restarting")`). Children come from a `forkserver` that has
already imported torch and transformers: a respawn then costs the model load only, not the seconds of
imports a fresh interpreter pays (measured with the tiny test model on the shared 2-core box: 3.2-4.2 s
per start with `spawn`, of which about 3 s were imports).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from extproc.gateway.compression.core.fine import FineResult, Skipped
from extproc.gateway.compression.offline import force_offline, install_tiktoken_cache
from extproc.gateway.compression.runtime.worker import BatchingCompressor
from extproc.gateway.observe import redact

log = logging.getLogger(__name__)

# Grace beyond a request's own deadline for the answer to come back across the pipe.
_TRANSFER_GRACE_S = 0.5
# The worker's name in `ps -o comm` / `top` (Linux truncates comm to 15 bytes).
WORKER_COMM = "aigrid-compress"
# Imported once by the forkserver, so that each child (first start and every respawn) inherits them.
_PRELOAD = [
    "extproc.gateway.compression.runtime.worker",
    "torch",
    "transformers",
    "transformers.models.bert.modeling_bert",
    "tokenizers",
]


def _child_main(conn: Connection, path: str | None, kwargs: dict[str, Any]) -> None:
    """Child process: load the model, then answer (job id, texts, rate, deadline) messages."""

    force_offline()
    install_tiktoken_cache()
    try:  # so that an operator (and a test) can tell the worker from the forkserver in `ps`
        with open("/proc/self/comm", "w") as f:
            f.write(WORKER_COMM)
    except OSError:
        pass

    redact.install()  # this process logs through logging's last-resort handler: no request text there either
    try:

        comp = BatchingCompressor.from_path(path, **kwargs)
    except Exception as exc:  # reported to the parent, which refuses to start
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", comp.tokens_per_second()))
    asyncio.run(_child_serve(conn, comp))


async def _child_serve(conn: Connection, comp: Any) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    send_lock = threading.Lock()

    def reader() -> None:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):  # parent gone: stop
                msg = None
            loop.call_soon_threadsafe(inbox.put_nowait, msg)
            if msg is None:
                return

    threading.Thread(target=reader, name="aigrid-compressor-rx", daemon=True).start()

    async def handle(jid: int, texts: tuple[str, ...], rate: float, deadline_s: float) -> None:
        try:
            res: FineResult | Skipped = await comp.compress(texts, rate, deadline_s)
        except Exception:
            log.exception("compression failed in the worker process")
            res = Skipped("error")
        with send_lock:
            try:
                conn.send((jid, res, comp.tokens_per_second()))
            except (OSError, ValueError):
                pass

    tasks: set[asyncio.Task[None]] = set()
    while True:
        msg = await inbox.get()
        if msg is None:
            break
        t = asyncio.create_task(handle(*msg))
        tasks.add(t)
        t.add_done_callback(tasks.discard)
    await comp.close()


@dataclass
class RespawnBackoff:
    """Delay before the next start: `first_s`, doubled after each failed or short-lived child up to
    `max_s`; back to `first_s` once a child has served `stable_s` (a crash loop backs off, a rare crash
    is repaired at once)."""

    first_s: float = 0.2
    max_s: float = 30.0
    stable_s: float = 60.0
    _next: float = 0.0

    def __post_init__(self) -> None:
        self._next = self.first_s

    def after_death(self, lived_s: float) -> float:
        if lived_s >= self.stable_s:
            self._next = self.first_s
        delay = self._next
        self._next = min(self.max_s, self._next * 2)
        return delay


class _Child:
    """One incarnation of the worker process: its pipe, its pending jobs, its result reader."""

    def __init__(self, ctx: Any, path: str | None, kwargs: dict[str, Any], start_timeout_s: float) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_child_main, args=(child, path, kwargs), name="aigrid-compressor", daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(start_timeout_s):
            self.proc.kill()
            raise RuntimeError(f"compressor process did not start within {start_timeout_s:.0f}s")
        try:
            kind, value = self.conn.recv()
        except EOFError:
            raise RuntimeError(f"compressor process exited during start (code {self.proc.exitcode})") from None
        if kind != "ready":
            self.proc.join(5)
            raise RuntimeError(f"compressor process failed to load the model: {value}")
        self.tps: float | None = value
        self.started = time.monotonic()
        self.pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self.lock = threading.Lock()
        self.stopping = False

    def read_until_gone(self) -> None:
        """Resolve futures as results arrive; when the pipe ends, answer whoever still waits with a skip."""
        while True:
            try:
                jid, res, tps = self.conn.recv()
            except (EOFError, OSError):
                break
            self.tps = tps
            with self.lock:
                entry = self.pending.pop(jid, None)
            if entry is not None:
                loop, fut = entry
                loop.call_soon_threadsafe(_resolve, fut, res)
        with self.lock:
            left, self.pending = list(self.pending.values()), {}
            self.stopping = True
        for loop, fut in left:
            loop.call_soon_threadsafe(_resolve, fut, Skipped("error"))


class ProcessCompressor:
    """FineCompressor whose model runs in a supervised child process (see the module docstring).

    The first start is synchronous and raises if the model cannot load (a bad path is a configuration
    error, reported at start-up). Later deaths are repaired in the background."""

    def __init__(
        self,
        path: str | None,
        *,
        max_in_flight: int = 64,
        start_timeout_s: float = 300.0,
        backoff: RespawnBackoff | None = None,
        **from_path_kwargs: Any,
    ) -> None:
        # forkserver: no fork of a process with gRPC threads (the server is a fresh interpreter), and a
        # respawn inherits the preloaded imports.
        self._ctx = multiprocessing.get_context("forkserver")
        self._ctx.set_forkserver_preload(_PRELOAD)
        self._path = path
        self._kwargs = from_path_kwargs
        self._start_timeout_s = start_timeout_s
        self._backoff = backoff or RespawnBackoff()
        self._max = max_in_flight
        self._ids = itertools.count(1)
        self._closed = False
        self._stop = threading.Event()
        self.restarts = 0  # children started after the first
        self.deaths = 0
        self._child: _Child | None = _Child(self._ctx, path, from_path_kwargs, start_timeout_s)
        self._tps: float | None = self._child.tps
        self._supervisor = threading.Thread(target=self._supervise, name="aigrid-compressor-supervisor", daemon=True)
        self._supervisor.start()

    # ---- supervision (its own thread: starting a child blocks for the model load) ------------------------

    def _supervise(self) -> None:
        child = self._child
        while child is not None:
            child.read_until_gone()
            child.proc.join(5)
            if self._closed:
                return
            self._child = None  # from here on, requests pass through uncompressed
            self.deaths += 1
            lived = time.monotonic() - child.started
            code = child.proc.exitcode
            child.conn.close()
            child = None
            while child is None and not self._closed:
                delay = self._backoff.after_death(lived)
                log.error(
                    "compressor worker exited (code %s) after %.1fs; restarting in %.1fs; requests pass through "
                    "uncompressed meanwhile", code, lived, delay,
                )
                if self._stop.wait(delay):
                    return
                t0 = time.monotonic()
                try:
                    child = _Child(self._ctx, self._path, self._kwargs, self._start_timeout_s)
                except Exception as exc:
                    log.error("compressor worker failed to start again: %s", exc)
                    lived, code = 0.0, "start failed"
                    continue
                if self._closed:
                    child.stopping = True
                    _stop_child(child)
                    return
                self.restarts += 1
                self._child = child
                log.warning("compressor worker restarted (pid %s, %.1fs to load, restart %d)",
                            child.proc.pid, time.monotonic() - t0, self.restarts)

    def up(self) -> bool:
        child = self._child
        return child is not None and not child.stopping

    def pid(self) -> int | None:
        child = self._child
        return child.proc.pid if child is not None else None

    # ---- FineCompressor ---------------------------------------------------------------------------------

    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        child = self._child
        if self._closed:
            return Skipped("error")
        if child is None:
            return Skipped("restarting")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        jid = next(self._ids)
        with child.lock:
            if child.stopping:
                return Skipped("restarting")
            if len(child.pending) >= self._max:
                return Skipped("saturated")
            child.pending[jid] = (loop, fut)
        try:
            child.conn.send((jid, tuple(texts), rate, deadline_s))
        except (OSError, ValueError):
            with child.lock:
                child.pending.pop(jid, None)
            return Skipped("restarting")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=deadline_s + _TRANSFER_GRACE_S)
        except asyncio.TimeoutError:
            with child.lock:
                child.pending.pop(jid, None)
            return Skipped("deadline")

    def tokens_per_second(self) -> float | None:
        child = self._child
        if child is not None and child.tps is not None:
            self._tps = child.tps
        return self._tps

    async def close(self) -> None:
        self._closed = True
        self._stop.set()
        child = self._child
        if child is not None:
            await asyncio.to_thread(_stop_child, child)
        await asyncio.to_thread(self._supervisor.join, 35.0)


def _stop_child(child: _Child) -> None:
    if child.proc.is_alive():
        try:
            child.conn.send(None)
        except (OSError, ValueError):
            pass
        child.proc.join(30.0)
        if child.proc.is_alive():
            child.proc.kill()
    child.conn.close()


def _resolve(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)
