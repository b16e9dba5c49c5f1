"""The fine-step model worker in a child process.

In a thread, the model shares the gateway's GIL: between torch kernels it holds the interpreter, and the
gRPC loop's routing answers wait (measured: p99 routing latency x1.4-2.0 while compressing, on 2 cores).
In a child process the gateway only pickles texts across a pipe. The child runs the same
BatchingCompressor (batching, deadlines, bounded queue); the parent adds its own in-flight bound and a
deadline, so a stuck or dead child turns into skipped compressions, never into waiting requests.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import multiprocessing
import threading
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from extproc.gateway.compression.core.fine import FineResult, Skipped
from extproc.gateway.compression.offline import force_offline, install_tiktoken_cache
from extproc.gateway.compression.runtime.worker import BatchingCompressor
from extproc.gateway.observe import redact

log = logging.getLogger(__name__)

# Grace beyond a request's own deadline for the answer to come back across the pipe.
_TRANSFER_GRACE_S = 0.5


def _child_main(conn: Connection, path: str | None, kwargs: dict[str, Any]) -> None:
    """Child process: load the model, then answer (job id, texts, rate, deadline) messages."""

    force_offline()
    install_tiktoken_cache()

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


class ProcessCompressor:
    """FineCompressor whose model runs in a child process (see the module docstring)."""

    def __init__(
        self,
        path: str | None,
        *,
        max_in_flight: int = 64,
        start_timeout_s: float = 300.0,
        **from_path_kwargs: Any,
    ) -> None:
        ctx = multiprocessing.get_context("spawn")  # no fork of a process with gRPC threads
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(
            target=_child_main, args=(child, path, from_path_kwargs), name="aigrid-compressor", daemon=True
        )
        self._proc.start()
        child.close()
        if not self._conn.poll(start_timeout_s):
            self._proc.kill()
            raise RuntimeError(f"compressor process did not start within {start_timeout_s:.0f}s")
        try:
            kind, value = self._conn.recv()
        except EOFError:
            raise RuntimeError(f"compressor process exited during start (code {self._proc.exitcode})") from None
        if kind != "ready":
            self._proc.join(5)
            raise RuntimeError(f"compressor process failed to load the model: {value}")
        self._tps: float | None = value
        self._max = max_in_flight
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[Any]]] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="aigrid-compressor-results", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        while True:
            try:
                jid, res, tps = self._conn.recv()
            except (EOFError, OSError):
                break
            self._tps = tps
            with self._lock:
                entry = self._pending.pop(jid, None)
            if entry is not None:
                loop, fut = entry
                loop.call_soon_threadsafe(_resolve, fut, res)
        # The child is gone: whoever still waits gets a skip, not a hang.
        with self._lock:
            left, self._pending = list(self._pending.values()), {}
        for loop, fut in left:
            loop.call_soon_threadsafe(_resolve, fut, Skipped("error"))
        if not self._closed:
            log.error("compressor process exited (code %s); compression is off until restart", self._proc.exitcode)
            self._closed = True

    async def compress(self, texts: Sequence[str], rate: float, deadline_s: float) -> FineResult | Skipped:
        if self._closed:
            return Skipped("error")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        jid = next(self._ids)
        with self._lock:
            if len(self._pending) >= self._max:
                return Skipped("saturated")
            self._pending[jid] = (loop, fut)
        try:
            self._conn.send((jid, tuple(texts), rate, deadline_s))
        except (OSError, ValueError):
            with self._lock:
                self._pending.pop(jid, None)
            return Skipped("error")
        try:
            return await asyncio.wait_for(asyncio.shield(fut), timeout=deadline_s + _TRANSFER_GRACE_S)
        except asyncio.TimeoutError:
            with self._lock:
                self._pending.pop(jid, None)
            return Skipped("deadline")

    def tokens_per_second(self) -> float | None:
        return self._tps

    async def close(self) -> None:
        if self._proc.is_alive():
            self._closed = True
            try:
                self._conn.send(None)
            except (OSError, ValueError):
                pass
            await asyncio.to_thread(self._proc.join, 30.0)
            if self._proc.is_alive():
                self._proc.kill()
        self._conn.close()


def _resolve(fut: asyncio.Future[Any], res: Any) -> None:
    if not fut.done():
        fut.set_result(res)
