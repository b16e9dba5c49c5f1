"""One replica's engine loop in real time, and the per-request sinks its tokens go to.

Design for time fidelity on a small CPU (hundreds of streams on 2 cores):

* one asyncio task per replica runs the engine: schedule a step, sleep until its modelled end, commit;
* the tokens of a step are written by that same task straight to each stream's transport (already
  framed as HTTP chunks), so a streamed token costs one ``transport.write`` and no task wake-up; a
  request handler wakes only twice (first token, end of stream);
* the step timeline is absolute: a step that ends late does not delay the next one's modelled end, so a
  short hiccup is caught up instead of drifting; lateness is measured on every step and exported.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import TYPE_CHECKING, Any

from extproc.tools.tokens import Filler

from .api import SseTemplates
from .engine import FINISHED, EngineCore, SimRequest
from .stats import LATENESS_BUCKETS, Hist

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimSite

log = logging.getLogger("aigrid.sim")

# A stream whose client stopped reading is cut once this much output is queued for it.
MAX_STREAM_BUFFER = 8 * 1024 * 1024
# asyncio's epoll wait rounds its timeout up to whole milliseconds, so a timer fires 0-1 ms after its
# deadline. Asking to wake half a millisecond early centres the error on zero (lateness in about
# [-0.5, +0.5] ms on an idle box) instead of a systematic ~0.5 ms delay on every step.
WAKE_LEAD_S = 0.0005


# ---- per-request output sinks --------------------------------------------------------------------


class Sink:
    """Where one request's tokens go. Filled by the replica task; drained by the request handler."""

    __slots__ = (
        "stream", "prefix", "suffix_more", "suffix_last", "first_prefix", "texts", "offset",
        "sent", "direct", "transport", "pending", "first", "done", "req", "replica", "closed", "held",
    )

    def __init__(self, stream: bool, offset: int, texts: list[bytes] | None) -> None:
        self.stream = stream
        self.offset = offset  # filler word offset
        self.texts = texts  # per-token text when a stop string cuts the output; else the word table
        self.prefix = b""
        self.first_prefix = b""
        self.suffix_more = b""
        self.suffix_last = b""
        self.sent = 0
        self.direct = False
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.held: list[bytes] = []  # tokens waiting for the stream interval
        loop = asyncio.get_running_loop()
        self.first: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.req: SimRequest | None = None
        self.replica: "Replica | None" = None
        self.closed = False

    def token_bytes(self, last: bool) -> bytes:
        i = self.sent
        self.sent = i + 1
        if self.texts is not None:
            word = self.texts[i] if i < len(self.texts) else b""
        else:
            words = Filler.words_json
            word = words[(self.offset + i) % len(words)]
        head = self.first_prefix if i == 0 else self.prefix
        return head + word + (self.suffix_last if last else self.suffix_more)

    def fail(self) -> None:
        """The client is gone (or stopped reading): stop generating for it."""
        if self.closed:
            return
        self.closed = True
        if self.req is not None and self.replica is not None:
            self.replica.core.abort(self.req)
        for fut in (self.first, self.done):
            if not fut.done():
                fut.set_result(None)


    def set_templates(self, t: SseTemplates) -> None:
        self.first_prefix, self.prefix, self.suffix_more, self.suffix_last = t.first_prefix, t.prefix, t.suffix_more, t.suffix_last


def frame(data: bytes) -> bytes:
    """One HTTP/1.1 chunk."""
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---- a replica: one engine + its loop --------------------------------------------------------------


class Replica:
    def __init__(self, site: "SimSite", index: int) -> None:
        self.site = site
        self.index = index
        self.core = EngineCore(site.hw, prefix_caching=site.config.prefix_caching)
        self.lateness = Hist(LATENESS_BUCKETS)
        self.lateness_samples: deque[float] = deque(maxlen=200_000)
        self.slip_seconds = 0.0
        self.inbound = 0  # requests on the simulated link, not yet arrived at the engine
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._busy: deque[tuple[float, float]] = deque()
        self._last_due = 0.0
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._rng = random.Random(site.config.seed * 1000 + index)

    @property
    def load(self) -> int:
        return self.core.num_running + self.core.num_waiting + self.inbound

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name=f"sim-{self.site.config.name}-{self.index}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def submit(self, req: SimRequest) -> None:
        self.core.add(req)
        if not self._wake.is_set():
            self._wake_at = self._loop.time()
            self._wake.set()

    def gpu_util_percent(self, window: float = 1.0) -> float:
        """Share of the last ``window`` seconds the modelled GPU was busy (DCGM samples ~1 s)."""
        now = self._loop.time()
        lo = now - window
        busy = 0.0
        for s, e in self._busy:
            if e <= lo:
                continue
            busy += min(e, now) - max(s, lo)
        return max(0.0, min(100.0, 100.0 * busy / window))

    async def _run(self) -> None:
        loop = self._loop
        core = self.core
        slip_threshold = self.site.config.slip_threshold_ms / 1000.0
        t_free = loop.time()  # modelled time at which the GPU finished its last step
        try:
            while True:
                if not core.has_work:
                    self._wake.clear()
                    await self._wake.wait()
                    # Idle GPU: the step starts when the request arrived, not when this task woke.
                    t_free = max(t_free, self._wake_at or loop.time())
                now = loop.time()
                start = t_free
                if now - start > slip_threshold:
                    # Too far behind to catch up by running steps back to back: give the time up,
                    # visibly (aigrid_sim_clock_slip_seconds_total).
                    self.slip_seconds += now - start
                    start = now
                plan = core.schedule(start)
                if plan.empty:
                    t_free = start
                    continue
                end = start + plan.duration
                delay = end - loop.time() - WAKE_LEAD_S
                if delay > 0:
                    await asyncio.sleep(delay)
                emitted = core.commit(plan, end)
                t_free = end
                if emitted:
                    self._dispatch(emitted, end)
                # Lateness is taken after the step's tokens were handed to the sockets (or to the
                # simulated link): it covers a late timer and the cost of writing hundreds of streams.
                late = loop.time() - end
                self.lateness.observe(late)
                self.lateness_samples.append(late)
                busy = self._busy
                busy.append((start, end))
                while busy and busy[0][1] < end - 5.0:
                    busy.popleft()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug here must not silently hang every stream
            log.exception("sim engine loop %s/%d crashed", self.site.config.name, self.index)
            for r in [*core.running, *core.waiting]:
                if isinstance(r.sink, Sink):
                    r.sink.fail()
            raise

    def _dispatch(self, emitted: list[SimRequest], t_end: float) -> None:
        delay = self.site.link_delay_s
        batch = [(r.sink, r.status == FINISHED) for r in emitted]
        if delay <= 0:
            self._deliver(batch)
            return
        # The step's tokens cross the simulated link together; jitter varies per step and delivery
        # times stay monotone (a TCP stream never reorders).
        jitter = self.site.link_jitter_s
        due = t_end + delay + (self._rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)
        due = max(due, self._last_due)
        self._last_due = due
        self._loop.call_at(due, self._deliver, batch)

    def _deliver(self, batch: list[tuple[Any, bool]]) -> None:
        interval = self.site.config.stream_interval
        for sink, last in batch:
            if not isinstance(sink, Sink) or sink.closed:
                continue
            if sink.stream:
                data = sink.token_bytes(last)
                if sink.direct:
                    if interval > 1:
                        if not last and sink.sent % interval:
                            sink.held.append(data)
                            continue
                        if sink.held:
                            sink.held.append(data)
                            data = b"".join(sink.held)
                            sink.held.clear()
                    tr = sink.transport
                    if tr is None or tr.is_closing() or tr.get_write_buffer_size() > MAX_STREAM_BUFFER:
                        sink.fail()
                        continue
                    tr.write(frame(data))
                else:
                    sink.pending.append(data)
                    if not sink.first.done():
                        sink.first.set_result(None)
            else:
                sink.sent += 1
            if last and not sink.done.done():
                sink.done.set_result(None)
