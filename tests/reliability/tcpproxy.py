"""A TCP relay that can be partitioned: the network between one gateway and Redis, for fault injection.

`partition()` black-holes it (connections stay open, bytes are dropped, new connections are accepted and
never answered: what a lost route looks like, not a refused port); `heal()` drops the stuck connections
and relays again. Runs on its own event loop in a thread."""

from __future__ import annotations

import asyncio
import threading


class PartitionableProxy:
    def __init__(self, target_port: int, listen_port: int) -> None:
        self.target_port, self.listen_port = target_port, listen_port
        self.partitioned = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="partition-proxy")

    def start(self) -> "PartitionableProxy":
        self._thread.start()
        self._ready.wait(5)
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.listen_port))
        self._ready.set()
        self._loop.run_forever()
        self._loop.close()

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                if not self.partitioned:  # partitioned: the bytes vanish
                    w.write(data)
                    await w.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            w.close()

    async def _client(self, cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
        self._writers.add(cw)
        try:
            if self.partitioned:
                await cr.read()  # accepted, never answered, until healed (closed) or the client gives up
                return
            ur, uw = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            cw.close()
            return
        self._writers.add(uw)
        await asyncio.gather(self._pipe(cr, uw), self._pipe(ur, cw), return_exceptions=True)
        self._writers.discard(cw)
        self._writers.discard(uw)

    def partition(self) -> None:
        self.partitioned = True

    def heal(self) -> None:
        def close_all() -> None:
            for w in list(self._writers):
                w.close()
            self._writers.clear()
            self.partitioned = False

        self._loop.call_soon_threadsafe(close_all)

    def stop(self) -> None:
        async def shut() -> None:
            self._server.close()
            for w in list(self._writers):
                w.close()
            me = asyncio.current_task()
            tasks = [t for t in asyncio.all_tasks(self._loop) if t is not me]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
