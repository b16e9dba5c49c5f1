"""The twin's ONE point of contact with the gateway: config for an arm, the real `Gateway` (routing
pipeline, spill hysteresis, in-flight accounting, affinity), and the compressor's real policy (rate
control, and the coarse step's document choices: segmentation, the shipped ranker, budget, selection).

Nothing else in the twin imports `extproc.gateway.server`, `extproc.gateway.routing`, `extproc.gateway.config` or
`extproc.gateway.compression`: when the routing framework changes how arms are expressed, this file changes.
"""

from __future__ import annotations

import asyncio
import functools
import gzip
import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extproc.gateway.compression.core.cache import quantize_rate
from extproc.gateway.compression.core.cache import RankingCache
from extproc.gateway.compression.core.coarse import MAX_RANK_CHARS, CoarseRanker, Ranking
from extproc.gateway.compression.core.rate import RateInputs, decide_rate
from extproc.gateway.compression.core.segment import SegmentOptions, segment
from extproc.gateway.compression.rewriter import (
    OWN_DEADLINE_SHARE,
    CompressionRewriter,
    build_ranker,
    predicted_slack,
)
from extproc.gateway.config import GatewayConfig, load_config_text
from extproc.gateway.config.compression import CompressionSettings
from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.loadmap.peers import PeerTable, decode_in_flight, encode_in_flight
from extproc.gateway.request.features import RequestFeatures, SlaClass
from extproc.gateway.routing.profiles import BUILTIN_PROFILES
from extproc.gateway.server.gateway import Gateway
from extproc.gateway.server.metrics import GatewayMetrics
from extproc.tools.sim.profiles import load_profiles, make_hardware
from extproc.tools.tokens import count_text
from extproc.tools.twin.arms import Arm
from extproc.tools.twin.compcost import CoarseCosts, CoarseStage
from extproc.tools.twin.scenario import Scenario
from extproc.tools.workload.generate import Request, rag_segments
from extproc.tools.workload.rag import Corpus, build_corpus, rag_messages
from extproc.wire.sites import SiteRole


class ArmUnavailable(RuntimeError):
    """The arm needs a routing profile this build of the gateway does not have."""


# Profiles the evaluation needs beyond the built-in ones, written the way an operator would in
# aigrid.yaml (`routing.profiles`): the waterfall's first step, spill routing with neither SLA classes nor
# affinity.
_EXTRA_PROFILES: dict[str, dict[str, Any]] = {
    "spill_no_sla_no_affinity": {
        "filters": ["not_drained", "not_unhealthy", "known_load", "serves_model"],
        "rules": [{"type": "spill", "params": {"sla_aware": False}}],
    },
}
# Profiles that treat every request as standard: the compressor's per-class floors are ablated with them.
_NO_SLA = frozenset({"aigrid_no_sla", "spill_no_sla", "spill_no_sla_no_affinity"})


def routing_available(arm: Arm) -> bool:
    return arm.profile in BUILTIN_PROFILES or arm.profile in _EXTRA_PROFILES


def config_dict(sc: Scenario, arm: Arm) -> tuple[dict[str, Any], bool]:
    """aigrid.yaml for the arm (as a mapping), and whether the compressor sees SLA classes."""
    if not routing_available(arm):
        raise ArmUnavailable(f"arm {arm.key}: routing profile {arm.profile!r} is not in this gateway build")
    default = next((s.name for s in sc.sites if s.role is SiteRole.edge), sc.sites[0].name)
    routing: dict[str, Any] = {"profile": arm.profile}
    if arm.profile in _EXTRA_PROFILES:
        routing["profiles"] = {arm.profile: _EXTRA_PROFILES[arm.profile]}
    cfg: dict[str, Any] = {
        "sites": [s.gateway_site(["127.0.0.1:1"], prefill_tokens_per_s=s.prefill_tokens_per_s or _prefill_speed(s, sc.dilation),
                                 replicas=s.replicas, speed=engine_speed(s, sc.dilation))
                  for s in sc.sites],
        "policy": {"default_site": default, **sc.policy},
        "routing": routing,
        # The scenario's SLOs are the gateway's too (the TTFT scorer budgets with them).
        "slo": {k: v.model_dump(exclude_none=True) for k, v in sc.slo.items()},
        "gateway": {"metrics_listen": "", "rtt_probe_interval_s": 0,
                    "in_flight_publish_ms": int(sc.in_flight_publish_ms)},
    }
    if arm.compress:
        # The ranker is the gateway's default (`auto`: MiniLM + BM25 for English) unless the scenario says.
        comp: dict[str, Any] = {"enabled": True, "ranker": sc.compressor.ranker, "deadline_ms": 1500, **sc.compression}
        if sc.compressor.measured:
            # The rewriter decides with the coarse pass's speed as measured, the figure the twin charges.
            comp.setdefault("coarse_tokens_per_s", sc.compressor.coarse_tokens_per_s)
        if arm.fixed_rate is not None:
            comp["fixed_rate"] = arm.fixed_rate
        if sc.dilation != 1.0:
            # The GPU time a removed token saves is dilated like the GPU (the compressor's own CPU is not).
            k = sc.dilation
            comp["prefill_tokens_per_s"] = comp.get("prefill_tokens_per_s",
                                                    CompressionSettings.model_fields["prefill_tokens_per_s"].default) / k
            comp["site_prefill_tokens_per_s"] = {n: v / k for n, v in comp.get("site_prefill_tokens_per_s", {}).items()}
        cfg["compression"] = comp
    return cfg, arm.profile not in _NO_SLA


def _prefill_speed(site: Any, dilation: float = 1.0) -> float:
    """What an operator's benchmark of one replica would say: a 2,048-token prefill, roofline time (on the
    dilated hardware when the scenario is dilated: what a benchmark of the slowed site would measure)."""
    return _roofline_prefill_speed(site.gpu, site.model, site.gpus_per_replica, dilation)


@functools.lru_cache(maxsize=64)
def _roofline_prefill_speed(gpu: str, model: str, tp: int, dilation: float = 1.0) -> float:
    hw = make_hardware(load_profiles(), gpu, model, tp, speed_factor=1.0 / dilation)
    n = 2048
    return round(n / hw.step_time(n, 0, n * (n + 1) // 2))


def engine_speed(site: Any, dilation: float = 1.0) -> dict[str, float]:
    """`sites[].speed` as an operator's benchmark of one replica would give it (the roofline's figures):
    a 2,048-token prefill, a decode step at batch 1 and its slope to batch 64 at 2,048 tokens of context
    per sequence, and the replica's KV cache."""
    return dict(_roofline_speed(site.gpu, site.model, site.gpus_per_replica, site.prefill_tokens_per_s, dilation))


@functools.lru_cache(maxsize=64)
def _roofline_speed(gpu: str, model: str, tp: int, prefill: float | None,
                    dilation: float = 1.0) -> tuple[tuple[str, float], ...]:
    hw = make_hardware(load_profiles(), gpu, model, tp, speed_factor=1.0 / dilation)
    ctx = 2048
    d1 = hw.step_time(1, ctx, ctx, 1)
    d64 = hw.step_time(64, 64 * ctx, 64 * ctx, 64)
    return (("prefill_tokens_per_s", prefill or _roofline_prefill_speed(gpu, model, tp, dilation)),
            ("decode_ms", round(1e3 * d1, 3)), ("decode_ms_per_seq", round(1e3 * (d64 - d1) / 63, 4)),
            ("kv_cache_tokens", int(hw.kv_capacity_tokens)), ("decode_context_tokens", ctx))


def arm_config(sc: Scenario, arm: Arm) -> GatewayConfig:
    """The arm's gateway configuration, validated as `aigrid serve` would (once per scenario and arm: a
    sweep runs the same arm hundreds of times)."""
    return _arm_config(sc.model_dump_json(), arm)


@functools.lru_cache(maxsize=64)
def _arm_config(scenario_json: str, arm: Arm) -> GatewayConfig:
    cfg, _ = config_dict(Scenario.model_validate_json(scenario_json), arm)
    return load_config_text(yaml.safe_dump(cfg), f"twin arm {arm.key}")


@dataclass(frozen=True, slots=True)
class Routed:
    site: str
    step: str
    pressure: float | None  # the chosen site's pressure as this decision saw it (in-flight included)
    requests_waiting: int | None
    # The cost model's prediction for this request at the chosen site (profiles with estimators), ms.
    ttft_ms: float | None = None
    tpot_ms: float | None = None
    slack: float | None = None
    uncached_tokens: int | None = None
    # What the compressor's keep-rate follows (rewriter.predicted_slack of the decision).
    rate_slack: float | None = None
    # > 0: the gateway holds the request back this long and decides again (Decision.hold_ms).
    hold_ms: float = 0.0


# One decision in this many is timed (the first, then every TIME_EVERY-th) for decision_us.
TIME_EVERY = 8
_SLA: dict[str, SlaClass] = {c.value: c for c in SlaClass}  # SlaClass(x) without the Enum call per request


class Router:
    """One gateway: the real Gateway object (the arm's routing profile) on the twin's virtual clock, and
    its side of the in-flight exchange between gateway replicas (the real message codec and PeerTable)."""

    def __init__(self, sc: Scenario, arm: Arm, clock: Callable[[], float], seed: int, index: int, *,
                 gauges: bool = True) -> None:
        self.arm = arm
        self.decisions = 0
        self._timed = 0  # decisions timed, and their CPU seconds (see decision_seconds)
        self._timed_s = 0.0
        config = arm_config(sc, arm)
        self.config = config
        self.id = f"gw{index}"
        self._clock = clock
        # GatewayMetrics registers on a private CollectorRegistry of its own (server/metrics.py).
        self.gateway = Gateway(config, self._snapshot, metrics=GatewayMetrics(), clock=clock,
                               rng=random.Random(f"{seed}:gateway:{index}"))
        self._prefix = self.needs_prefix = self.gateway.router.needs_prefix_blocks
        self._gauges = gauges
        self._snap = LoadSnapshot()
        publish_s = config.gateway.in_flight_publish_ms / 1000.0
        self.publish_s = publish_s
        # As serve() builds it (server/main.py): peers forgotten after max(1 s, 4 publish intervals).
        self.peers = PeerTable(self.id, peer_ttl_s=max(1.0, 4 * publish_s)) if publish_s > 0 else None
        self._last_published: dict[str, int] = {}
        self._last_sent = -1e18

    def _snapshot(self) -> LoadSnapshot:
        return self._snap

    def on_snapshot(self, snap: LoadSnapshot) -> None:
        self._snap = snap
        if self._gauges:
            self.gateway.on_snapshot(snap)  # the router's state, then the gauges from its views
        else:
            # What Gateway.on_snapshot does to routing state, without setting gauges nobody reads here
            # (tests/twin checks a run is the same either way).
            self.gateway.router.on_snapshot(snap, self._clock())

    @property
    def decision_seconds(self) -> float:
        """CPU seconds spent in route(), estimated from the timed 1-in-TIME_EVERY sample of decisions."""
        return self._timed_s * self.decisions / self._timed if self._timed else 0.0

    def route(self, req: Request, prefix_blocks: tuple[int, ...] = (), held_ms: float = 0.0) -> Routed:
        # CPU time, not wall time: on a shared box the wall clock counts the other processes' turns. The
        # CPU clock is a system call (~2 us, as much as a cheap decision), so one decision in TIME_EVERY is
        # timed; decision_seconds scales that sample up.
        self.decisions += 1
        timed = self.decisions % TIME_EVERY == 1 or TIME_EVERY == 1
        t0 = time.process_time() if timed else 0.0
        f = RequestFeatures(req.prompt_tokens, None, True, _SLA[req.sla], req.conversation_key, True,
                            prefix_blocks=prefix_blocks if self._prefix else (), inference=True, held_ms=held_ms)
        d, views = self.gateway.route(f)
        view = next((v for v in views if v.name == d.site), None)
        load = self._snap.sites.get(d.site)
        out = Routed(d.site, d.step, view.pressure if view is not None else None,
                     load.requests_waiting if load is not None else None, d.ttft_ms, d.tpot_ms, d.slack,
                     d.uncached_tokens, predicted_slack(d), d.hold_ms)
        if timed:
            self._timed_s += time.process_time() - t0
            self._timed += 1
        return out

    # -- the in-flight exchange (server/peers.py's publisher loop, loadmap/peers.py's table) ----------
    def publish_tick(self, keepalive_s: float = 0.5) -> bytes | None:
        """One tick of the publisher: fold in the peers' counts, and the message to send, if any."""

        now = self._clock()
        if self.peers is not None:
            self.gateway.router.set_peer_in_flight(self.peers.totals(now))
        counts = {k: v for k, v in self.gateway.router.sent_since_report.items() if v}
        if counts == self._last_published and not (counts and now - self._last_sent >= keepalive_s):
            return None
        self._last_published, self._last_sent = counts, now
        return encode_in_flight(self.id, counts)

    def on_peer_message(self, data: bytes) -> None:
        if self.peers is None:
            return
        gid, counts = decode_in_flight(data)
        self.peers.update(gid, counts, self._clock())


# ---- compression ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ItemPlan:
    """What the compressor's real segmenter sees of one RAG item (computed once per item)."""

    compressible_tokens: int
    cost_tokens: int  # what a coarse-only pass reads (rewriter: a capped prefix of each document)
    rag: bool


@dataclass(frozen=True, slots=True)
class CoarseResult:
    """The real coarse step's outcome for one item at one (quantised) rate."""

    kept: tuple[int, ...]  # documents kept whole
    cut: tuple[tuple[int, int], ...]  # (document, tokens) of a dropped document whose head fills the budget
    texts: tuple[str, ...]  # each document's text after compression ("" when dropped)
    changed: bool


@dataclass(frozen=True, slots=True)
class Compressed:
    kept: tuple[int, ...] | None  # None: unchanged
    rate: float
    reason: str
    cpu_s: float  # coarse-step CPU seconds charged (and latency added, unless latency_s says otherwise)
    cut: tuple[tuple[int, int], ...] = ()
    texts: tuple[str, ...] = ()
    # With the measured resource model (compcost.py): the latency the coarse step added (queue, dense pass
    # or its deadline) and the ranking it used ("cached", "bm25", "hybrid", "bm25(busy)", "bm25(timeout)").
    latency_s: float | None = None
    ranker: str = ""


# The answers that depend on nothing but the arm and the request's kind (immutable: shared).
_OFF = Compressed(None, 1.0, "off", 0.0)
_NOTHING = Compressed(None, 1.0, "nothing_to_compress", 0.0)


class CompressionModel:
    """The compressor as the gateway runs it with no fine-step model (the demo's setting): the rewriter's
    own rate decision (`RatePolicy`, `decide_rate` on the coarse-only inputs, the rate on its 0.05 cache
    grid), then the real `CompressionPipeline.compress` (segmenter, ranking, `choose_documents` with its
    quality floor, the head-of-document fill) — run once per (item, rate) and cached, since the same
    prompt at the same rate always compresses to the same bytes (the rewriter's own ranking cache makes
    that so)."""

    def __init__(self, sc: Scenario, arm: Arm, corpus: Corpus) -> None:
        if not arm.compress:
            self.enabled = False  # an arm without compression never asks: nothing to build
            return
        cfg, self._sla = config_dict(sc, arm)
        self.settings = CompressionSettings.model_validate(cfg.get("compression", {"enabled": False}))
        self.enabled = arm.compress and self.settings.enabled
        if not self.enabled:
            return  # an arm without compression never asks
        # The shipped ranker's decisions (`build_ranker`, as `build_compression_rewriter` builds it), each
        # corpus item ranked once per process before the run (see `shipped_rankings`).
        self.rankings = shipped_rankings(corpus, self.settings)
        rw = CompressionRewriter(self.settings, ranker=FrozenRanker(self.rankings))  # type: ignore[arg-type]
        self.policy = rw.policy  # the rewriter's own RatePolicy
        self.pipeline = rw.pipeline
        self.corpus = corpus
        self.tokens_per_s = sc.compressor.coarse_tokens_per_s
        self._items = item_plans(corpus, self.settings.min_segment_tokens)
        self._key = (id(corpus), self.settings.model_dump_json())
        # With measured costs, the coarse step's cost and timing come from its resources and queues
        # (compcost.py); which documents it keeps stays this model's (`_coarse`).
        self.stage: CoarseStage | None = None
        c = sc.compressor
        if c.measured:
            assert c.lexical_tokens_per_s is not None
            wants_dense = self.settings.ranker in ("hybrid", "embedding") or (
                self.settings.ranker == "auto" and "en" in self.settings.embedding_languages)
            self.stage = CoarseStage(CoarseCosts(c.coarse_tokens_per_s, c.lexical_tokens_per_s, c.dense_cold_s, c.dense_warm_s),
                                     wants_dense, self.settings.cache_max_rankings, self.settings.embedding_cache_documents)
            self._doc_keys = [tuple(k for k, _ in rag_segments(corpus, i)[2:-1]) for i in range(len(corpus.items))]

    def decide(self, req: Request, routed: Routed, now: float = 0.0) -> Compressed:
        if not self.enabled:
            return _OFF
        if req.kind != "rag":
            return _NOTHING
        ip = self._items[req.item]
        if not ip.rag or ip.compressible_tokens == 0:
            return _NOTHING
        s = self.settings
        sla = req.sla if self._sla else "standard"
        inputs = RateInputs(
            compressible_tokens=ip.compressible_tokens, sla=sla, model=None, pressure=routed.pressure,
            requests_waiting=routed.requests_waiting,
            prefill_tokens_per_s=s.site_prefill_tokens_per_s.get(routed.site, s.prefill_tokens_per_s),
            compressor_tokens_per_s=s.coarse_tokens_per_s, deadline_s=s.deadline_ms / 1000.0 * OWN_DEADLINE_SHARE,
            cost_tokens=ip.cost_tokens, slack=routed.rate_slack,
        )
        d = decide_rate(self.policy, inputs)
        if not d.compress:
            return Compressed(None, 1.0, d.reason, 0.0)
        rate = quantize_rate(d.rate)
        latency = None
        method = ""
        if self.stage is not None:
            ch = self.stage.charge(now, req.item, self._doc_keys[req.item], ip.cost_tokens,
                                   s.deadline_ms / 1000.0 * OWN_DEADLINE_SHARE)
            cpu, latency, method = ch.cpu_s, ch.latency_s, ch.method
        else:
            cpu = ip.cost_tokens / self.tokens_per_s
        res = self._coarse(req.item, rate)
        if not res.changed:
            return Compressed(None, rate, "no_change", cpu, latency_s=latency, ranker=method)
        return Compressed(res.kept, rate, "compressed", cpu, res.cut, res.texts, latency_s=latency, ranker=method)

    def _coarse(self, item: int, rate: float) -> CoarseResult:
        key = (*self._key, item, rate)
        hit = _COARSE_CACHE.get(key)
        if hit is not None:
            return hit


        it = self.corpus.items[item]
        body = {"model": "m", "messages": rag_messages(it)}
        out = asyncio.run(self.pipeline.compress("/v1/chat/completions", body, rate, 60.0, None, use_fine=False))
        texts = tuple(out.doc_texts_after) if out.doc_texts_after else tuple(d.text for d in it.docs)
        cut = tuple((i, count_text(texts[i])) for i in out.cut_docs)
        res = CoarseResult(tuple(out.kept_docs), cut, texts, out.body is not None)
        _COARSE_CACHE[key] = res
        return res


_COARSE_CACHE: dict[tuple[Any, ...], CoarseResult] = {}
_RANKINGS: dict[tuple[Any, ...], dict[str, Ranking]] = {}


class FrozenRanker:
    """The pipeline's ranker in a twin run: the rankings the shipped ranker gave each corpus item, looked up
    by the same content key the pipeline's ranking cache uses. An item that was not ranked is an error,
    never a silent BM25 fallback."""

    def __init__(self, rankings: dict[str, Ranking]) -> None:
        self._rankings = rankings

    async def rank(self, question: str, docs: list[str], timeout_s: float | None = None) -> Ranking:
        hit = self._rankings.get(RankingCache.key(question, docs))
        if hit is None:
            raise RuntimeError("twin: a RAG prompt the shipped ranker did not rank before the run")
        return hit


def _ranker_key(settings: CompressionSettings) -> str:
    return settings.model_dump_json(include={
        "coarse", "ranker", "embedding_model_path", "embedding_languages", "embedding_cache_documents",
        "embedding_cache_floats", "min_segment_tokens", "rewrite_earlier_turns"})


def shipped_rankings(corpus: Corpus, settings: CompressionSettings) -> dict[str, Ranking]:
    """The shipped ranker's ranking of every RAG item of the corpus (by the pipeline's content key): the
    ranker `build_ranker(settings)` makes (the gateway's), its model loaded (`ready`), each item ranked once
    in corpus order with no deadline (the ranker idle, as the eval measures it). RAG documents repeat
    across items, and the ranker's sentence-vector cache makes the repeats a lookup.

    Ranking the reference corpus costs ~165 s of CPU here, so a ranking is kept on disk under a content
    key (`rankings_key`): first the user's cache, then the copy shipped in the package
    (`SHIPPED_RANKINGS`, written by `aigrid twin rank --shipped`), so a fresh machine and CI never pay it.
    A copy made under other library versions (torch, transformers, ...) is used only once a sample of its
    items, ranked anew here, agrees with it (`_agrees`); otherwise the corpus is ranked anew. Cached per
    process and (corpus, ranker settings); `prepare_compression` computes it before the sweep forks its
    workers, so they inherit it and never run the model."""
    key = (id(corpus), _ranker_key(settings))
    hit = _RANKINGS.get(key)
    if hit is not None:
        return hit
    ranker = build_ranker(settings)
    out = _stored_rankings(corpus, settings, ranker)
    if out is None:
        out = _rank_corpus(corpus, settings, ranker, corpus.items)
        if _cache_enabled():
            _write_rankings(_cache_dir() / f"{rankings_key(corpus, settings, ranker)}.json.gz", out)
    _RANKINGS[key] = out
    return out


def _rag_item_keys(corpus: Corpus, settings: CompressionSettings, items: Any) -> list[tuple[str, str, list[str]]]:
    """(content key, question, documents) of each RAG item, segmented as the gateway segments it."""
    opts = SegmentOptions(min_segment_tokens=settings.min_segment_tokens,
                          rewrite_earlier_turns=settings.rewrite_earlier_turns)
    out = []
    for it in items:
        seg = segment("/v1/chat/completions", {"model": "m", "messages": rag_messages(it)}, opts)
        if seg.rag:
            docs = [d.text for d in seg.documents]
            out.append((RankingCache.key(seg.question, docs), seg.question, docs))
    return out


def _rank_corpus(corpus: Corpus, settings: CompressionSettings, ranker: CoarseRanker, items: Any) -> dict[str, Ranking]:
    asyncio.run(ranker.ready())
    # `rank_sync`: the same scores as `rank` with no deadline, computed in this thread (torch with the
    # process's threads, not the gateway's one encoder thread: the precompute is the slow part of a
    # first twin run).
    out = {k: ranker.rank_sync(q, docs) for k, q, docs in _rag_item_keys(corpus, settings, items)}
    asyncio.run(ranker.close())
    return out


# What decides a ranking, for the stored copy's name: the corpus, the ranker's settings, the model's file
# contents and the source of the ranking code. Any change is a new name (ranked anew), never a stale
# ranking. The libraries that run the model are recorded in the file instead (`_stack`): a patch release
# of torch must not make every fresh machine rank for three minutes, but it must not pass unchecked.
_RANKING_CODE = ("core/coarse.py", "core/japanese.py", "core/segment.py", "core/cache.py")
_STACK_DISTS = ("torch", "transformers", "sentence-transformers", "numpy", "fugashi", "unidic-lite", "tokenizers")
SHIPPED_RANKINGS = Path(__file__).parent / "data" / "rankings"
# A stored ranking from another library stack is trusted when this many of its items, ranked anew here,
# give the same method, language, links and scores within `_SCORE_TOLERANCE`.
_AGREEMENT_SAMPLE = 12
_SCORE_TOLERANCE = 1e-3


@functools.lru_cache(maxsize=8)
def _file_digest(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rankings_key(corpus: Corpus, settings: CompressionSettings, ranker: CoarseRanker) -> str:
    """The content key of a corpus' ranking (see `_RANKING_CODE`): the same on every machine that has the
    same corpus, settings, model files and ranking code."""
    import extproc.gateway.compression as comp_pkg  # noqa: PLC0415

    h = hashlib.sha256()
    h.update(_ranker_key(settings).encode())
    h.update(repr([(it.question, [d.text for d in it.docs]) for it in corpus.items]).encode())
    root = Path(comp_pkg.__file__).parent
    for rel in _RANKING_CODE:
        h.update((root / rel).read_bytes())
    model = ranker.model_path()
    if model is not None:
        for f in sorted(Path(model).rglob("*")):
            if f.is_file():
                st = f.stat()
                h.update(f"{f.relative_to(model).as_posix()}:{_file_digest(str(f), st.st_size, st.st_mtime_ns)}".encode())
    return h.hexdigest()[:24]


def _stack() -> dict[str, str]:
    import importlib.metadata as md  # noqa: PLC0415

    out = {}
    for dist in _STACK_DISTS:
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out


def _cache_enabled() -> bool:
    return os.environ.get("AIGRID_TWIN_RANK_CACHE", "1") != "0"


def _cache_dir() -> Path:
    base = os.environ.get("AIGRID_CACHE_DIR") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "aigrid"
    return Path(base) / "twin-rankings"


def _read_rankings(path: Path) -> tuple[dict[str, Ranking], dict[str, str]] | None:
    try:
        doc = json.loads(gzip.decompress(path.read_bytes()))
        rankings = {k: Ranking(v["scores"], v["method"], v["lang"], tuple(tuple(x) for x in v["links"]))
                    for k, v in doc["rankings"].items()}
        return rankings, dict(doc["stack"])
    except (OSError, ValueError, KeyError, TypeError, EOFError, gzip.BadGzipFile):
        return None


def _write_rankings(path: Path, rankings: dict[str, Ranking]) -> None:
    doc = {"stack": _stack(),
           "rankings": {k: {"scores": [float(x) for x in r.scores], "method": r.method, "lang": r.lang,
                            "links": [list(x) for x in r.links]} for k, r in sorted(rankings.items())}}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        # mtime=0: the same rankings give the same bytes (the shipped copy diffs only when it changed).
        tmp.write_bytes(gzip.compress(json.dumps(doc, separators=(",", ":")).encode(), mtime=0))
        os.replace(tmp, path)
    except OSError:  # a read-only home: rank again next time
        pass


def _agrees(stored: dict[str, Ranking], fresh: dict[str, Ranking]) -> bool:
    for k, r in fresh.items():
        s = stored.get(k)
        if s is None or (s.method, s.lang, tuple(s.links)) != (r.method, r.lang, tuple(r.links)):
            return False
        if len(s.scores) != len(r.scores) or any(abs(a - b) > _SCORE_TOLERANCE for a, b in zip(s.scores, r.scores)):
            return False
    return True


def _stored_rankings(corpus: Corpus, settings: CompressionSettings, ranker: CoarseRanker) -> dict[str, Ranking] | None:
    """A stored ranking of this corpus that covers every RAG item and is valid on this library stack."""
    if not _cache_enabled():
        return None
    name = f"{rankings_key(corpus, settings, ranker)}.json.gz"
    wanted = {k for k, _, _ in _rag_item_keys(corpus, settings, corpus.items)}
    here = _stack()
    for path in (_cache_dir() / name, SHIPPED_RANKINGS / name):
        got = _read_rankings(path) if path.is_file() else None
        if got is None or not wanted <= got[0].keys():
            continue
        rankings, stack = got
        if stack == here:
            return rankings
        step = max(1, len(corpus.items) // _AGREEMENT_SAMPLE)
        fresh = _rank_corpus(corpus, settings, build_ranker(settings), corpus.items[::step])
        if _agrees(rankings, fresh):
            return rankings
    return None


def write_shipped_rankings(corpus: Corpus, settings: CompressionSettings, into: Path = SHIPPED_RANKINGS) -> Path:
    """Rank the corpus anew and write it where `shipped_rankings` looks first on a fresh machine."""
    ranker = build_ranker(settings)
    path = into / f"{rankings_key(corpus, settings, ranker)}.json.gz"
    _write_rankings(path, _rank_corpus(corpus, settings, ranker, corpus.items))
    return path


def ranking_inputs(sc: Scenario, arm: Arm) -> tuple[Corpus, CompressionSettings] | None:
    """The corpus and the compressor settings an arm's coarse step ranks with (None: the arm does not
    compress)."""
    if not arm.compress:
        return None
    cfg, _ = config_dict(sc, arm)
    settings = CompressionSettings.model_validate(cfg["compression"])
    return (build_corpus(sc.workload.rag), settings) if settings.enabled else None


def prepare_compression(sc: Scenario, arm: Arm) -> None:
    """Rank the corpus with the shipped ranker in this process (before a sweep forks its workers)."""
    got = ranking_inputs(sc, arm)
    if got is not None:
        shipped_rankings(*got)


_ITEM_CACHE: dict[tuple[int, int], tuple[ItemPlan, ...]] = {}


def item_plans(corpus: Corpus, min_segment_tokens: int) -> tuple[ItemPlan, ...]:
    key = (id(corpus), min_segment_tokens)
    hit = _ITEM_CACHE.get(key)
    if hit is not None:
        return hit
    opts = SegmentOptions(min_segment_tokens=min_segment_tokens)
    out = []
    for it in corpus.items:
        seg = segment("/v1/chat/completions", {"model": "m", "messages": rag_messages(it)}, opts)
        if seg.rag and len(seg.documents) != len(it.docs):
            raise RuntimeError(f"item {it.key}: the segmenter found {len(seg.documents)} documents, the item has {len(it.docs)}")
        out.append(ItemPlan(
            compressible_tokens=seg.compressible_tokens,
            cost_tokens=sum(min(d.tokens, MAX_RANK_CHARS // 4) for d in seg.documents),
            rag=bool(seg.rag),
        ))
    res = tuple(out)
    _ITEM_CACHE[key] = res
    return res


def measure_coarse_speed(corpus: Corpus, repeats: int = 1, items: int | None = None) -> float:
    """Tokens/s of the real coarse step's ranking (BM25 with its expansion and links, `rank_sync`) over the
    corpus' items (the first `items` of them), on this machine (process CPU time)."""
    ranker = CoarseRanker("bm25")
    tokens = 0
    t0 = time.process_time()
    for _ in range(repeats):
        for it in corpus.items[:items]:
            docs = [d.text for d in it.docs]
            ranker.rank_sync(it.question, docs)
            tokens += sum(min(len(d) // 4, MAX_RANK_CHARS // 4) for d in docs)
    dt = max(time.process_time() - t0, 1e-9)
    return tokens / dt


def measure_compressor(corpus: Corpus, ranker: str = "auto", items: int = 60, dense_items: int = 4) -> dict[str, Any]:
    """The coarse step's costs on this machine (`compcost.CoarseCosts`' fields), with the gateway's own code:

    * `coarse_tokens_per_s`: the whole coarse-only pass with BM25 (`CompressionPipeline.compress` at rate
      0.5, a fresh ranking cache per prompt, then `orjson` of the body), per capped document token;
    * `lexical_tokens_per_s`: BM25 ranking alone (`measure_coarse_speed`);
    * `dense_cold_s` / `dense_warm_s`: one dense pass of the embedding model, on the ranker's own
      embedding thread (one torch thread, as the gateway runs it), for prompts of distinct entities seen
      for the first time and then again (sentence vectors cached); None when the ranker would not use the
      model or it is not installed.
    Process CPU time (all threads) for the first two, the embedding thread's CPU time for the dense pass."""
    import orjson  # noqa: PLC0415 (the gateway's own encoder)

    from extproc.gateway.compression.core.pipeline import CompressionPipeline  # noqa: PLC0415

    settings = CompressionSettings(enabled=True, ranker="bm25", deadline_ms=60_000)
    bm25 = CoarseRanker("bm25")
    sample = corpus.items[:items]
    plans = item_plans(corpus, settings.min_segment_tokens)[:items]
    pipes = [CompressionPipeline(settings, None, bm25) for _ in sample]
    bodies = [{"model": "m", "messages": rag_messages(it)} for it in sample]

    async def run() -> float:
        t0 = time.process_time()
        for pipe, body in zip(pipes, bodies):
            out = await pipe.compress("/v1/chat/completions", body, 0.5, 60.0, None, use_fine=False)
            if out.body is not None:
                orjson.dumps(out.body)
        return time.process_time() - t0

    cpu = max(asyncio.run(run()), 1e-9)
    tokens = sum(p.cost_tokens for p in plans)
    out: dict[str, Any] = {"coarse_tokens_per_s": round(tokens / cpu), "lexical_tokens_per_s": round(measure_coarse_speed(corpus, items=items)),
                           "dense_cold_s": None, "dense_warm_s": None, "ranker": ranker,
                           "items": len(sample), "pipeline_ms_per_prompt": round(1000 * cpu / len(sample), 2)}
    if ranker != "bm25":
        out.update(measure_dense(corpus, ranker, dense_items))
    return out


def measure_dense(corpus: Corpus, ranker: str = "auto", dense_items: int = 4) -> dict[str, Any]:
    """`measure_compressor`'s dense part alone (thread CPU time of the ranker's embedding thread, so it may
    run beside other work: `aigrid demo` runs it while the twin sweeps the arms that do not compress)."""
    out: dict[str, Any] = {"dense_cold_s": None, "dense_warm_s": None}
    dense = CoarseRanker(ranker)
    if not asyncio.run(dense.ready()):
        out["dense"] = "embedding model not installed: BM25 only"
        return out

    def timed(question: str, docs: list[str]) -> float:
        t = time.thread_time()
        dense._embed_busy = True
        dense._dense(question, docs)
        return time.thread_time() - t

    # Distinct entities (an item is 3 x entity + variant), so that a cold pass meets documents not seen.
    picks = [corpus.items[i] for i in range(0, len(corpus.items), 3)][:dense_items]
    cold = [dense._embed_pool.submit(timed, it.question, [d.text for d in it.docs]).result() for it in picks]
    warm = [dense._embed_pool.submit(timed, it.question, [d.text for d in it.docs]).result() for it in picks]
    out.update(dense_cold_s=round(sum(cold) / len(cold), 4), dense_warm_s=round(sum(warm) / len(warm), 4),
               dense_items=len(picks))
    asyncio.run(dense.close())
    return out


__all__ = ["ArmUnavailable", "CompressionModel", "Compressed", "FrozenRanker", "Routed", "Router", "config_dict",
           "measure_coarse_speed", "measure_compressor", "measure_dense", "prepare_compression", "ranking_inputs",
           "rankings_key", "routing_available", "shipped_rankings", "write_shipped_rankings", "SHIPPED_RANKINGS"]
