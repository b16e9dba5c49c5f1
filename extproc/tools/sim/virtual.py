"""Virtual-clock drivers of one ``EngineCore``: steps take zero wall time and exact model time.

Tests, the saturation study and the calibration bench run thousands of steps in milliseconds,
deterministically. (The real-time driver is ``replica.py``; the grid twin drives cores itself.)
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Callable, Iterable

from .engine import FINISHED, EngineCore, SimRequest
from .profiles import ReplicaHardware


@dataclass
class Arrival:
    time: float
    prompt_len: int
    output_len: int


@dataclass
class RunSummary:
    """Aggregates of a virtual run over the measured window."""

    duration: float
    completed: int
    request_throughput: float  # requests per second
    output_throughput: float  # generated tokens per second
    mean_ttft: float
    mean_itl: float
    max_waiting: int
    mean_waiting: float
    max_running: int
    preemptions: int
    mean_kv_usage: float


class VirtualSim:
    """Drives one ``EngineCore`` on a virtual clock: steps take zero wall time and exact model time."""

    def __init__(self, hw: ReplicaHardware) -> None:
        self.core = EngineCore(hw)
        self.now = 0.0
        self._arrivals: deque[Arrival] = deque()
        self._seq = 0
        self.completed: list[SimRequest] = []
        self.on_finish: Callable[[SimRequest, float], Iterable[Arrival]] | None = None
        # One sample per step: (end time, duration, waiting, running, KV usage, tokens emitted).
        self._samples: list[tuple[float, float, int, int, float, int]] = []

    def submit(self, arrival: Arrival) -> SimRequest:
        self._seq += 1
        req = SimRequest(f"v{self._seq}", arrival.prompt_len, arrival.output_len, arrival.time)
        self.core.add(req)
        return req

    def schedule_arrivals(self, arrivals: Iterable[Arrival]) -> None:
        merged = sorted([*self._arrivals, *arrivals], key=lambda a: a.time)
        self._arrivals = deque(merged)

    def run(self, until: float | None = None, max_steps: int = 10_000_000) -> None:
        core = self.core
        steps = 0
        while steps < max_steps:
            while self._arrivals and self._arrivals[0].time <= self.now:
                self.submit(self._arrivals.popleft())
            if not core.has_work:
                if not self._arrivals:
                    return
                nxt = self._arrivals[0].time
                if until is not None and nxt > until:
                    self.now = until
                    return
                self.now = nxt
                continue
            if until is not None and self.now >= until:
                return
            plan = core.schedule(self.now)
            end = self.now + plan.duration
            emitted = core.commit(plan, end)
            self._samples.append((end, plan.duration, core.num_waiting, core.num_running, core.kv_usage, len(emitted)))
            self.now = end
            steps += 1
            for r in emitted:
                if r.status == FINISHED:
                    self.completed.append(r)
                    if self.on_finish is not None:
                        self.schedule_arrivals(self.on_finish(r, end))

    def summary(self, t_from: float = 0.0, t_to: float | None = None) -> RunSummary:
        t_to = self.now if t_to is None else t_to
        done = [r for r in self.completed if r.last_token_time is not None and t_from < r.last_token_time <= t_to]
        dur = max(t_to - t_from, 1e-12)
        window = [s for s in self._samples if t_from < s[0] <= t_to]
        # Tokens, not completed requests, measure output throughput: identical requests started
        # together finish in cohorts, and counting whole requests would quantise the rate.
        out_tokens = sum(s[5] for s in window)
        ttfts = [r.first_token_time - r.arrival for r in done if r.first_token_time is not None]
        itls = [
            (r.last_token_time - r.first_token_time) / (r.num_generated - 1)
            for r in done
            if r.num_generated > 1 and r.first_token_time is not None and r.last_token_time is not None
        ]
        tot = sum(s[1] for s in window) or 1e-12
        return RunSummary(
            duration=dur,
            completed=len(done),
            request_throughput=len(done) / dur,
            output_throughput=out_tokens / dur,
            mean_ttft=sum(ttfts) / len(ttfts) if ttfts else 0.0,
            mean_itl=sum(itls) / len(itls) if itls else 0.0,
            max_waiting=max((s[2] for s in window), default=0),
            mean_waiting=sum(s[1] * s[2] for s in window) / tot,
            max_running=max((s[3] for s in window), default=0),
            preemptions=self.core.stats.preemptions,
            mean_kv_usage=sum(s[1] * s[4] for s in window) / tot,
        )


def run_closed_loop(
    hw: ReplicaHardware,
    concurrency: int,
    prompt_len: int,
    output_len: int,
    num_requests: int,
    warmup_requests: int = 0,
    stagger: float = 0.0,
) -> RunSummary:
    """``concurrency`` clients each send the next request as soon as the previous one finishes
    (like ``vllm bench serve --max-concurrency C --request-rate inf``). Deterministic.

    ``stagger``: client i starts at ``i * stagger / concurrency`` instead of all at t=0. Identical
    requests started together stay in lock-step cohorts forever on a noiseless clock (a real GPU's
    jitter breaks them up), so steady-state studies spread the starts; published-benchmark
    comparisons use 0, as the benchmark tools do."""
    sim = VirtualSim(hw)
    sent = concurrency
    marks: dict[str, float] = {}

    def again(req: SimRequest, t: float) -> list[Arrival]:
        nonlocal sent
        if len(sim.completed) == warmup_requests:
            marks["start"] = t
        if sent >= num_requests + warmup_requests:
            # From here on the load drains; the measured window ends at the first slot left empty.
            marks.setdefault("stop", t)
            return []
        sent += 1
        return [Arrival(t, prompt_len, output_len)]

    sim.on_finish = again
    sim.schedule_arrivals(Arrival(i * stagger / concurrency, prompt_len, output_len) for i in range(concurrency))
    sim.run()
    return sim.summary(t_from=marks.get("start", 0.0), t_to=marks.get("stop"))


def run_open_loop(
    hw: ReplicaHardware,
    rate: float,
    duration: float,
    prompt_len: int,
    output_len: int,
) -> RunSummary:
    """Requests arrive evenly spaced at ``rate`` per second for ``duration`` seconds; the summary covers
    the arrival window (so an overloaded engine shows a growing queue instead of a drained one)."""
    sim = VirtualSim(hw)
    n = int(rate * duration)
    sim.schedule_arrivals(Arrival(i / rate, prompt_len, output_len) for i in range(n))
    sim.run(until=duration)
    return sim.summary(t_from=duration * 0.25, t_to=duration)
