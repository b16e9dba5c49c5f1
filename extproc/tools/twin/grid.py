"""The grid twin: a discrete-event simulation in virtual time of clients -> M gateways -> N sites.

What runs is the project's own code: each replica is the simulator's `EngineCore` (vLLM V1 scheduling,
KV blocks, chunked prefill, preemption, roofline step times), driven in decode stretches (several steps
per event, cut short when a request arrives: the same step times as one step per event); each site's
agent reports every `report_interval_ms` (through the agent's combine step and the real protobuf codec
with `codec=True`, else as the node entry the map would decode, see `reports.py`); the map (node table +
site aggregation) reaches every gateway `redis_delay_ms` later; each gateway is a real `Gateway` on the
virtual clock (routing pipeline, spill hysteresis, in-flight accounting, affinity) and compresses with
the compressor's real rate control and coarse-step selection (through `gateway_adapter.py`); its
Prometheus gauges, which nothing here reads, are set only with `gauges=True`.

Times: a request leaves its gateway after the coarse step's CPU time (when it compresses), reaches the
site half a round trip later, and every token reaches the client half a round trip after the site emits
it. Replica choice inside a site is the simulator's (least loaded, ties round robin). No sockets, no
wall clock: the same scenario, arm, rate and seed give the same numbers.
"""

from __future__ import annotations

import functools
import heapq
import random
import zlib
from dataclasses import dataclass, field
from typing import Any

from extproc.tools.sim.engine import FINISHED, EngineCore, SimRequest, StepPlan
from extproc.tools.sim.kvcache import ROOT_HASH
from extproc.tools.sim.profiles import load_profiles, make_hardware
from extproc.tools.twin.arms import Arm
from extproc.tools.twin.gateway_adapter import CompressionModel, Router
from extproc.tools.twin.reports import Agent, LoadMap
from extproc.tools.twin.scenario import Scenario
from extproc.tools.workload.generate import (
    Request,
    SessionSource,
    generate_open_loop,
    rag_segments,
)
from extproc.tools.workload.rag import build_corpus

ARRIVE, SITE_IN, STEP_END, REPORT, DELIVER, PUBLISH, PEER, RETRY = 0, 1, 2, 3, 4, 5, 6, 7
# The gateway's approximate-prefix index keeps at most this many leading blocks (request/openai.py).
MAX_PREFIX_BLOCKS = 256
BLOCK = 16


@functools.lru_cache(maxsize=65536)
def _key_id(key: str) -> int:
    return zlib.crc32(key.encode())


def block_hashes(segments: tuple[tuple[str, int], ...], bs: int = BLOCK) -> tuple[int, ...]:
    """Cached: RAG prompts repeat (chat prompts do not, and skip the cache)."""
    return _block_hashes_cached(segments, bs)


def _block_hashes(segments: tuple[tuple[str, int], ...], bs: int = BLOCK) -> tuple[int, ...]:
    """The prompt's hash chain over full blocks (the engine's prefix-cache key), from its segments: a
    segment key names fixed content, so (key, offset) pairs identify each block's tokens. Same segments
    in the same order give the same chain in every request, at every site, in every process."""
    out: list[int] = []
    h = ROOT_HASH
    cur: list[int] = []
    fill = 0
    for key, n in segments:
        h, fill = _feed(key, n, bs, h, cur, fill, out)
    return tuple(out)


_block_hashes_cached = functools.lru_cache(maxsize=8192)(_block_hashes)


class ChatChains:
    """A conversation's hash chain, kept between its turns: turn k+1's prompt is turn k's without its
    reply priming, plus the answer and the next user message, so only the new segments are hashed. The
    chain is the one `_block_hashes` computes over the whole prompt."""

    def __init__(self) -> None:
        # conversation -> [segments hashed, chain hash, the open block's (key, offset) pairs, its fill, out]
        # (the lists are the state's own and grow in place turn by turn)
        self._state: dict[int, list[Any]] = {}

    def hashes(self, conv: int, segments: tuple[tuple[str, int], ...], bs: int = BLOCK) -> tuple[int, ...]:
        st = self._state.get(conv)
        if st is None:
            st = self._state[conv] = [0, ROOT_HASH, [], 0, []]
        done, h, cur, fill, out = st
        # Every segment but the last (the reply priming) stays in the next turn's prompt.
        for key, n in segments[done:-1]:
            h, fill = _feed(key, n, bs, h, cur, fill, out)
        st[0], st[1], st[3] = len(segments) - 1, h, fill
        key, n = segments[-1]
        tail: list[int] = []
        _feed(key, n, bs, h, list(cur), fill, tail)
        return (*out, *tail)

    def forget(self, conv: int) -> None:
        self._state.pop(conv, None)


def _feed(key: str, n: int, bs: int, h: int, cur: list[int], fill: int, out: list[int]) -> tuple[int, int]:
    """One segment into the chain: `_block_hashes` over a whole prompt, `ChatChains` turn by turn."""
    kid = _key_id(key)
    off = 0
    if fill:  # finish the open block first
        take = min(n, bs - fill)
        cur.append(kid)
        cur.append(off)
        off = take
        fill += take
        if fill < bs:
            return h, fill
        h = hash((h, *cur))
        out.append(h)
        cur.clear()
        fill = 0
    # Blocks wholly inside this segment: their (key, offset) pair alone, as the general step gives it.
    whole = n - (n - off) % bs
    append = out.append
    for o in range(off, whole, bs):
        h = hash((h, kid, o))
        append(h)
    if whole < n:  # the segment's tail opens a block
        cur.append(kid)
        cur.append(whole)
        fill = n - whole
    return h, fill


def compressed_segments(corpus: Any, item: int, kept: tuple[int, ...], cut: tuple[tuple[int, int], ...]) -> tuple[tuple[str, int], ...]:
    """The segments of a compressed RAG prompt: the kept documents whole, a dropped one's head where the
    coarse step filled the budget with it (same key, fewer tokens: it shares the document's first blocks)."""
    full = rag_segments(corpus, item)
    heads = dict(cut)
    docs = corpus.items[item].docs
    out = [full[0], full[1]]
    for i in range(len(docs)):
        if i in kept:
            out.append(full[2 + i])
        elif i in heads:
            out.append((full[2 + i][0], heads[i] + 2))
    out.append(full[-1])
    return tuple(out)


@dataclass(slots=True)
class Flight:
    """One request's life in the twin."""

    req: Request
    sent: float = 0.0  # when the client sent it (after the previous turn, for chat)
    gateway: int = 0
    site: str = ""
    step: str = ""
    prompt_gpu: int = 0  # prompt tokens as they reached the site
    kept: tuple[int, ...] | None = None
    rate: float = 1.0
    compress_reason: str = ""
    cpu_s: float = 0.0
    ranker: str = ""  # the coarse step's ranking, with the measured cost model ("cached", "bm25(busy)", ...)
    first: float | None = None  # client-side time of the first token
    done: float | None = None
    retained: bool | None = None  # RAG: every gold document still in the prompt the GPU got
    measured: bool = False
    segments: tuple[tuple[str, int], ...] = ()
    hashes: tuple[int, ...] = ()  # the prompt's block hash chain as the site gets it
    cached: int = 0  # prompt tokens found in the site's prefix cache
    # The gateway's predicted TTFT / TPOT for it (ms; cost-model profiles only), beside what happened.
    pred_ttft_ms: float | None = None
    pred_tpot_ms: float | None = None
    pred_uncached: int | None = None
    held_ms: float = 0.0  # how long the gateway held it back before routing it (hold decisions)


@dataclass(slots=True)
class Replica:
    core: EngineCore
    busy: bool = False
    plan: StepPlan | None = None  # the step (or stretch) in progress
    gen: int = 0  # its STEP_END event's generation: a cut stretch leaves a stale event behind


@dataclass
class Site:
    name: str
    half_rtt: float
    replicas: list[Replica]
    agent: Agent
    rr: int = 0

    def pick(self) -> Replica:
        # The simulator's own rule (sim/server.py _pick_replica): least loaded, ties round robin.
        n = len(self.replicas)
        self.rr = (self.rr + 1) % n
        best = None
        best_load = 0
        for k in range(n):
            r = self.replicas[(self.rr + k) % n]
            load = r.core.num_running + r.core.num_waiting
            if best is None or load < best_load:
                best, best_load = r, load
        assert best is not None
        return best


@dataclass
class RunResult:
    flights: list[Flight]
    sites: dict[str, dict[str, Any]]
    timeline: list[tuple[float, str, float | None]] = field(default_factory=list)  # (t, site, pressure)
    keep_rates: list[tuple[float, float]] = field(default_factory=list)  # (t, rate) per compression decision
    decision_seconds: float = 0.0
    decisions: int = 0
    events: int = 0
    end_time: float = 0.0


# Decode steps planned per event at most: a stretch is cut by the next request the replica receives, so a
# longer one is mostly computed for nothing.
STRETCH_STEPS = 64


def run_grid(sc: Scenario, arm: Arm, rate: float, seed: int, *, trace: bool = False,
             requests: list[Request] | None = None, codec: bool = False, gauges: bool = False) -> RunResult:
    """Simulate one arm at one request rate (closed loop: that many users) with one seed. `codec`: reports
    go through the agent's combine step and the protobuf codec (the same numbers, slower). `gauges`: every
    map change also sets the gateway's Prometheus gauges (`Gateway.on_snapshot`; nothing in the twin reads
    them, so by default only the router's own state advances: the same numbers, faster)."""
    if arm.per_replica:
        sc = sc.per_replica()
    if arm.report_interval_ms is not None:
        sc = sc.model_copy(update={"report_interval_ms": arm.report_interval_ms})
    sw = sc.sweep
    prof = load_profiles()
    rng = random.Random(f"{seed}:grid")
    now = 0.0

    def clock() -> float:
        return now

    corpus = build_corpus(sc.workload.rag)
    routers = [Router(sc, arm, clock, seed, g, gauges=gauges) for g in range(sc.gateways)]
    comp = CompressionModel(sc, arm, corpus)
    lmap = LoadMap()
    chains = ChatChains()
    sites: dict[str, Site] = {}
    for s in sc.sites:
        hw = make_hardware(prof, s.gpu, s.model, s.gpus_per_replica, speed_factor=1.0 / sc.dilation)
        sites[s.name] = Site(s.name, s.one_way_ms / 1000.0, [Replica(EngineCore(hw)) for _ in range(s.replicas)],
                             Agent(s.name, sc.report_interval_ms))
    closed = sc.workload.loop == "closed" and requests is None
    source = SessionSource(sc.workload, seed) if closed else None
    if requests is None:
        requests = [] if closed else generate_open_loop(sc.workload, rate, sw.duration_s, seed)
    heap: list[tuple[float, int, int, Any]] = []
    seq = 0
    heappush = heapq.heappush
    heappop = heapq.heappop

    def push(t: float, code: int, obj: Any) -> None:
        nonlocal seq
        seq += 1
        heappush(heap, (t, seq, code, obj))

    flights: list[Flight] = []
    by_conv_turn: dict[tuple[int, int], Request] = {}
    for r in requests:
        if r.kind == "chat" and r.turn > 1:
            by_conv_turn[(r.conv, r.turn)] = r
        else:
            push(r.at, ARRIVE, r)
    interval = sc.report_interval_ms / 1000.0
    delay = sc.redis_delay_ms / 1000.0
    for name in sites:
        push(rng.uniform(0, interval), REPORT, name)
    # Gateway replicas' in-flight exchange (a single gateway has no peers: nothing to exchange).
    publish_s = routers[0].publish_s if len(routers) > 1 else 0.0
    if publish_s > 0:
        for gi in range(len(routers)):
            push(rng.uniform(0, publish_s), PUBLISH, gi)
    needs_prefix = routers[0].needs_prefix
    stop_at = sw.duration_s + sw.drain_s
    warmup_s, duration_s = sw.warmup_s, sw.duration_s
    res = RunResult(flights, {})
    gw_rr = 0
    events = 0
    outstanding = len(requests)

    def start_session(user: int, t: float) -> None:
        # Closed loop: the user's next session starts now; its turns are planned relative to now.
        nonlocal outstanding
        assert source is not None
        for r in source.next_session():
            r.at += t
            r.user = user
            outstanding += 1
            if r.kind == "chat" and r.turn > 1:
                by_conv_turn[(r.conv, r.turn)] = r
            else:
                push(r.at, ARRIVE, r)

    if closed:
        users = max(1, int(rate))
        for u in range(users):
            start_session(u, u * 1.0 / users)  # starts spread over the first second

    def start_step(rep: Replica, site: Site) -> None:
        plan = rep.core.schedule(now, STRETCH_STEPS)
        if plan.empty:
            rep.busy = False
            rep.plan = None
            return
        rep.busy = True
        rep.plan = plan
        rep.gen += 1
        push(plan.end, STEP_END, (rep, site, plan, rep.gen))

    def prompt_hashes(req: Request, segs: tuple[tuple[str, int], ...]) -> tuple[int, ...]:
        if req.kind == "rag":
            return block_hashes(segs)
        return chains.hashes(req.conv, segs)

    while heap:
        t, _, code, obj = heappop(heap)
        if t > stop_at:
            break
        now = t
        if code == STEP_END:
            rep, site, plan, gen = obj
            if gen != rep.gen:
                continue  # a stretch cut short by an arrival: its new end has its own event
            events += 1
            emitted = rep.core.commit(plan, now, events_only=True)
            for sr in emitted:
                fl: Flight = sr.sink
                if sr.num_generated == 1:
                    fl.first = now + site.half_rtt
                    fl.cached = sr.num_cached_tokens
                if sr.status == FINISHED:
                    fl.done = now + site.half_rtt
                    outstanding -= 1
                    req = fl.req
                    if req.kind == "chat":
                        if req.turn < req.turns:
                            nxt = by_conv_turn.pop((req.conv, req.turn + 1))
                            push(max(nxt.at, fl.done), ARRIVE, nxt)
                        else:
                            chains.forget(req.conv)
                    if closed and fl.done < sw.duration_s and not (req.kind == "chat" and req.turn < req.turns):
                        start_session(req.user, fl.done)
            start_step(rep, site)
            continue
        events += 1
        if code == ARRIVE or code == RETRY:
            if code == ARRIVE:
                req = obj
                fl = Flight(req, sent=now, measured=warmup_s <= now < duration_s)
                flights.append(fl)
                gi = gw_rr % len(routers)
                gw_rr += 1
                fl.gateway = gi
                # The gateway's prefix index keys on the prompt as the client sent it: the twin's 16-token
                # block chain stands for the gateway's 64-character one (same chain property, ~4 characters
                # a token).
                hashes = prompt_hashes(req, req.segments)
            else:  # a request the gateway held back, decided again by the same gateway
                fl, hashes = obj
                req, gi = fl.req, fl.gateway
            routed = routers[gi].route(req, hashes[:MAX_PREFIX_BLOCKS] if needs_prefix else (), fl.held_ms)
            if routed.hold_ms > 0:
                fl.held_ms += routed.hold_ms
                push(now + routed.hold_ms / 1000.0, RETRY, (fl, hashes))
                continue
            fl.site, fl.step = routed.site, routed.step
            fl.pred_ttft_ms, fl.pred_tpot_ms, fl.pred_uncached = routed.ttft_ms, routed.tpot_ms, routed.uncached_tokens
            c = comp.decide(req, routed, now)
            fl.rate, fl.compress_reason, fl.cpu_s, fl.kept = c.rate, c.reason, c.cpu_s, c.kept
            if trace and comp.enabled and req.kind == "rag":
                res.keep_rates.append((now, c.rate))
            if c.kept is not None:
                segs = compressed_segments(corpus, req.item, c.kept, c.cut)
                fl.segments = segs
                fl.hashes = block_hashes(segs)
                fl.prompt_gpu = sum(x for _, x in segs)
                it = corpus.items[req.item]
                # Kept: every gold document whole, or the part of it the answer needs still in its text.
                fl.retained = all(g in c.kept or needle in c.texts[g] for g, needle in zip(it.gold, it.needles))
            else:
                fl.prompt_gpu = req.prompt_tokens
                fl.segments = req.segments
                fl.hashes = hashes
                fl.retained = True if req.kind == "rag" else None
            fl.ranker = c.ranker
            push(now + (c.cpu_s if c.latency_s is None else c.latency_s) + sites[routed.site].half_rtt, SITE_IN, fl)
        elif code == SITE_IN:
            fl = obj
            site = sites[fl.site]
            rep = site.pick()
            sr = SimRequest(str(fl.req.rid), fl.prompt_gpu, fl.req.output_tokens, now, sink=fl, block_hashes=fl.hashes)
            rep.core.add(sr)
            if not rep.busy:
                start_step(rep, site)
            else:
                plan = rep.plan
                assert plan is not None
                if plan.steps > 1:
                    # The next step must see the new request: the stretch ends with the step in progress.
                    end = plan.end
                    rep.core.truncate(plan, now)
                    if plan.end != end:
                        rep.gen += 1
                        push(plan.end, STEP_END, (rep, site, plan, rep.gen))
        elif code == REPORT:
            site = sites[obj]
            reps = site.replicas
            running = sum(r.core.num_running for r in reps)
            waiting = sum(r.core.num_waiting for r in reps)
            kv = max(r.core.kv_usage_at(r.plan, now) for r in reps)
            msg = site.agent.report(running, waiting, kv, now) if codec else site.agent.reading(running, waiting, kv)
            push(now + delay, DELIVER, (site.agent, msg))
            if outstanding > 0 or any(r.busy for r in reps):
                push(now + interval, REPORT, obj)
        elif code == PUBLISH:
            msg = routers[obj].publish_tick()
            if msg is not None:
                push(now + delay, PEER, (obj, msg))
            if outstanding > 0:
                push(now + publish_s, PUBLISH, obj)
        elif code == PEER:
            src, msg = obj
            for gi, rt in enumerate(routers):
                if gi != src:
                    rt.on_peer_message(msg)
        elif code == DELIVER:
            agent, msg = obj
            snap = lmap.receive(msg, now) if codec else lmap.receive_reading(agent, msg, now)
            for rt in routers:
                rt.on_snapshot(snap)
            if trace:
                for v in routers[0].gateway.views(now):
                    res.timeline.append((now, v.name, v.pressure))
        if outstanding <= 0 and code not in (REPORT, PUBLISH) and not any(rp.busy for s in sites.values() for rp in s.replicas):
            break
    res.end_time = now
    res.events = events
    res.decision_seconds = sum(r.decision_seconds for r in routers)
    res.decisions = sum(r.decisions for r in routers)
    for name, s in sites.items():
        st = [r.core.stats for r in s.replicas]
        res.sites[name] = {
            "preemptions": sum(x.preemptions for x in st),
            "prompt_tokens_computed": sum(x.prompt_tokens for x in st),
            "generation_tokens": sum(x.generation_tokens for x in st),
            "busy_seconds": sum(x.busy_seconds for x in st),
            "prefix_cache_queries": sum(x.prefix_cache_queries for x in st),
            "prefix_cache_hits": sum(x.prefix_cache_hits for x in st),
            "replicas": len(s.replicas),
        }
    return res
