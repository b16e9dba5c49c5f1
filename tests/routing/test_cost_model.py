"""The cost model (`aigrid` profile): its arithmetic, each term, the slack picker, and the profile's
decisions on plain data. Pure: no I/O, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.gateway.config import load_config_text
from extproc.gateway.config.schema import EngineSpeed, PolicySettings, ProfileSpec, SiteRole, StepSpec
from extproc.gateway.request.features import RequestFeatures, SlaClass
from extproc.gateway.routing import costmodel as cm
from extproc.gateway.routing.framework import Decision, RoutingContext
from extproc.gateway.routing.profiles import BUILTIN_PROFILES
from extproc.gateway.routing.registry import ProfileError, build_profile
from extproc.gateway.routing.views import SiteView

# The reference grid's two GPUs as an operator's benchmark gives them (the twin's roofline figures).
L40S = EngineSpeed(prefill_tokens_per_s=10_657, decode_ms=21.8, decode_ms_per_seq=0.376, kv_cache_tokens=195_616)
H100 = EngineSpeed(prefill_tokens_per_s=31_334, decode_ms=6.37, decode_ms_per_seq=0.104, kv_cache_tokens=415_344)

CFG = """
sites:
  - {name: edge, role: edge, endpoints: ["127.0.0.1:1"], rtt_ms: 1,
     speed: {prefill_tokens_per_s: 10657, decode_ms: 21.8, decode_ms_per_seq: 0.376, kv_cache_tokens: 195616}}
  - {name: remote, role: far, endpoints: ["127.0.0.1:2"], rtt_ms: 8, replicas: 2,
     speed: {prefill_tokens_per_s: 31334, decode_ms: 6.37, decode_ms_per_seq: 0.104, kv_cache_tokens: 415344}}
"""


def cfg(text: str = CFG):
    return load_config_text(text)


def site(name: str, *, rtt: float, speed: EngineSpeed | None, replicas: int = 1, running: int = 0, waiting: int = 0,
         role: SiteRole = SiteRole.far) -> SiteView:
    return SiteView(name, role, rtt, False, True, 0.1, 0.1, 64.0, waiting, 0.1, 0, frozenset(),
                    running=running, replicas=replicas, speed=speed)


EDGE = site("edge", rtt=1, speed=L40S, role=SiteRole.edge)
REMOTE = site("remote", rtt=8, speed=H100, replicas=2)


def ctx(views, *, sla=SlaClass.standard, prompt=500, u=0.5, blocks=(), now=0.0, held=0.0) -> RoutingContext:
    f = RequestFeatures(prompt_tokens=prompt, sla=sla, prefix_blocks=blocks, held_ms=held)
    return RoutingContext(f, views, PolicySettings(), "edge", u, now)


def aigrid(text: str = CFG, name: str = "aigrid"):
    c = cfg(text)
    return build_profile(name, BUILTIN_PROFILES[name], c)


# ---- the arithmetic --------------------------------------------------------------------------------------
def test_queue_and_prefill_are_work_over_speed():
    assert cm.queue_wait_ms(20_000, 2, H100) == pytest.approx(1000 * 20_000 / (2 * 31_334))
    assert cm.prefill_ms(4_000, L40S) == pytest.approx(1000 * 4_000 / 10_657)
    assert cm.queue_wait_ms(-5, 1, H100) == 0.0


def test_decode_step_grows_with_the_batch():
    assert cm.decode_step_ms(L40S, 1) == pytest.approx(21.8)
    assert cm.decode_step_ms(L40S, 33) == pytest.approx(21.8 + 32 * 0.376)
    assert cm.decode_step_ms(L40S, 33, per_seq_ms=0.5) == pytest.approx(21.8 + 32 * 0.5)


def test_the_per_sequence_cost_follows_the_running_context_when_the_benchmark_says_its_context():
    bench = H100.model_copy(update={"decode_context_tokens": 2048})
    assert cm.per_seq_at(H100, 4096) == H100.decode_ms_per_seq  # no benchmark context: as measured
    assert cm.per_seq_at(bench, None) == H100.decode_ms_per_seq  # nothing routed there yet
    assert cm.per_seq_at(bench, 4096) == pytest.approx(2 * 0.104)  # twice the KV to read per sequence
    lo, hi = cm.CONTEXT_SCALE
    assert lo == 1.0  # the benchmark's figure is a floor: short contexts do not make decode cheaper
    assert cm.per_seq_at(bench, 1024) == pytest.approx(0.104)
    assert cm.per_seq_at(bench, 10**7) == pytest.approx(hi * 0.104)


def test_the_running_context_is_a_decaying_mean_of_the_prompts_routed_there():
    from extproc.gateway.routing.steps.slo.common import RunningContext

    rc = RunningContext(weight=0.1)
    assert rc.at("remote") is None
    v = replace(REMOTE, speed=H100.model_copy(update={"decode_context_tokens": 2048}))
    assert rc.per_seq(v) == 0.104  # nothing routed there yet: the benchmark's figure
    rc.add("remote", 1000)
    assert rc.at("remote") == 1000
    for _ in range(100):
        rc.add("remote", 4000)
    assert rc.at("remote") == pytest.approx(4000, rel=0.01) and rc.at("edge") is None
    assert rc.per_seq(v) == pytest.approx(0.104 * rc.at("remote") / 2048)


def test_long_contexts_predict_a_longer_decode_step():
    prof = aigrid()
    busy = replace(REMOTE, running=160, speed=H100.model_copy(update={"decode_context_tokens": 2048}))  # 80 per replica
    decode = next(s for s in prof.estimators if s.type_name == "tpot_decode")
    short = prof.decide(ctx([busy], sla=SlaClass.realtime, prompt=300)).tpot_ms
    for _ in range(200):
        decode.on_decision(ctx([busy], prompt=6_000), Decision("remote", "", ""))
    long = prof.decide(ctx([busy], sla=SlaClass.realtime, prompt=300)).tpot_ms
    assert short is not None and long is not None and long > short + 10


def test_stall_is_nothing_while_decode_is_memory_bound_and_grows_to_the_cap():
    # A light prefill load rides in the memory-bound decode steps for free.
    assert cm.stall_ms(L40S, 8, 0.2) == 0.0
    # Past the point where the steps turn compute-bound, each step stretches by 1 / (1 - rho).
    heavy = [cm.stall_ms(L40S, 64, r) for r in (0.5, 0.7, 0.8, 0.9, 0.99)]
    assert heavy == sorted(heavy) and heavy[-1] == heavy[-2]  # capped at MAX_PREFILL_SHARE
    assert heavy[2] > 0


@given(st.floats(0, 5000), st.floats(0, 500), st.floats(1, 20_000), st.floats(1, 1000))
def test_slack_is_one_minus_the_tighter_share(ttft, tpot, ttft_slo, tpot_slo):
    s = cm.slack(ttft, tpot, ttft_slo, tpot_slo)
    assert s == pytest.approx(min(1 - ttft / ttft_slo, 1 - tpot / tpot_slo))
    assert cm.slack(ttft, tpot, ttft_slo, None) == pytest.approx(1 - ttft / ttft_slo)


# ---- the profile's decisions ----------------------------------------------------------------------------
def test_a_long_prompt_goes_where_it_prefills_fastest_and_the_reason_says_why():
    prof = aigrid(name="aigrid_no_reserve")  # (with the reserve, the edge is also kept for realtime)
    d = prof.decide(ctx([EDGE, REMOTE], prompt=4_000))
    assert d.site == "remote"
    assert d.term == "ttft_prefill" and "ttft_prefill decided over edge" in d.reason
    assert d.ttft_ms == pytest.approx(8 + 1000 * 4_000 / 31_334)
    assert d.uncached_tokens == 4_000 and d.slack is not None and 0 < d.slack < 1


def test_realtime_takes_the_near_site_while_it_has_slack_and_leaves_when_it_has_none():
    prof = aigrid()
    assert prof.decide(ctx([EDGE, REMOTE], sla=SlaClass.realtime, prompt=300)).site == "edge"
    # 40 running streams on the L40S: a decode step of ~36 ms, too close to the 40 ms TPOT bound.
    busy = replace(EDGE, running=40)
    d = prof.decide(ctx([busy, REMOTE], sla=SlaClass.realtime, prompt=300))
    assert d.site == "remote" and "tpot_decode" in d.reason


def test_standard_work_leaves_the_near_site_to_realtime_when_it_would_not_fit_after_it():
    loaded = replace(EDGE, waiting=3)  # three queued requests of ~1,000 tokens: ~280 ms of prefill ahead
    with_reserve = aigrid()
    # Without the reserve (and without prefix affinity, which would send a cold prompt to its key's
    # home whichever site has room), the most slack is the edge's.
    spec = BUILTIN_PROFILES["aigrid_no_reserve"].model_copy(
        update={"picker": StepSpec(type="slo_slack", params={"affinity_min_slack": None})})
    without = build_profile("no_reserve_no_affinity", spec, cfg())
    # A short standard request fits the edge either way; the reserve keeps the edge for realtime.
    f = ctx([loaded, replace(REMOTE, running=60, waiting=30)], prompt=200)
    assert without.decide(f).site == "edge"
    d = with_reserve.decide(f)
    assert d.site == "remote" and d.term == "realtime_reserve"
    # A realtime request is never held back by the reserve.
    rt = ctx([replace(EDGE, waiting=0), replace(REMOTE, running=60, waiting=8)], sla=SlaClass.realtime, prompt=200)
    assert with_reserve.decide(rt).site == "edge"


def test_ties_are_drawn_from_the_request_key_not_the_site_order():
    twins = [site(n, rtt=2, speed=H100) for n in ("s1", "s2", "s3", "s4")]
    text = "sites:\n" + "".join(
        f"  - {{name: {n}, endpoints: ['127.0.0.1:{i + 1}'], rtt_ms: 2, speed: {{prefill_tokens_per_s: 31334, decode_ms: 6.37}}}}\n"
        for i, n in enumerate(("s1", "s2", "s3", "s4")))
    prof = aigrid(text)
    for sla in SlaClass:
        got = {prof.decide(ctx(twins, sla=sla, u=i / 40)).site for i in range(40)}
        assert got == {"s1", "s2", "s3", "s4"}, sla
        assert prof.decide(ctx(twins, sla=sla, u=0.3)).site == prof.decide(ctx(twins, sla=sla, u=0.3)).site


def _four(**load):
    names = ("s1", "s2", "s3", "s4")
    text = "sites:\n" + "".join(
        f"  - {{name: {n}, endpoints: ['127.0.0.1:{i + 1}'], rtt_ms: 2, speed: {{prefill_tokens_per_s: 31334, decode_ms: 6.37}}}}\n"
        for i, n in enumerate(names))
    return aigrid(text), [site(n, rtt=2, speed=H100, **load) for n in names]


def test_standard_work_goes_where_its_prefix_is_cached_while_that_site_has_room():
    prof, views = _four()
    prefill = next(s for s in prof.estimators if s.type_name == "ttft_prefill")
    blocks = tuple(range(1000, 1150))  # 2,400 tokens of documents
    prefill.on_decision(ctx(views, blocks=blocks), Decision("s3", "", ""))
    # s3 a little busier than the rest: still chosen, for the 2,400 tokens it need not prefill.
    views[2] = replace(views[2], running=20)
    d = prof.decide(ctx(views, prompt=2_500, blocks=blocks))
    assert d.site == "s3" and "prefix home" in d.reason and d.uncached_tokens == 100
    # Without room there (slack under affinity_min_slack), the prompt goes elsewhere.
    views[2] = replace(views[2], waiting=60, running=200)
    assert prof.decide(ctx(views, prompt=2_500, blocks=blocks)).site != "s3"


def test_a_prompt_cached_at_several_sites_goes_to_its_keys_rendezvous_home_among_them():
    prof, views = _four()
    prefill = next(s for s in prof.estimators if s.type_name == "ttft_prefill")
    blocks = tuple(range(2000, 2150))
    for name in ("s1", "s2", "s3"):  # a popular document, cached at three of the four sites
        prefill.on_decision(ctx(views, blocks=blocks), Decision(name, "", ""))
    views[3] = replace(views[3], running=0)
    views = [replace(v, running=10) if v.name != "s4" else v for v in views]  # s4 idle, but cold
    homes = {i: prof.decide(ctx(views, prompt=2_500, blocks=blocks, u=i / 300 + 0.0001)).site for i in range(300)}
    assert set(homes.values()) == {"s1", "s2", "s3"}  # never the cold site: the cache saves 2,400 tokens
    assert homes == {i: prof.decide(ctx(views, prompt=2_500, blocks=blocks, u=i / 300 + 0.0001)).site for i in range(300)}
    share = {n: sum(1 for v in homes.values() if v == n) / 300 for n in ("s1", "s2", "s3")}
    assert all(0.2 < x < 0.47 for x in share.values()), share
    # s2 full: its keys find new homes, every other key keeps its own (rendezvous hashing).
    full = [replace(v, waiting=80, running=300) if v.name == "s2" else v for v in views]
    moved = {i: prof.decide(ctx(full, prompt=2_500, blocks=blocks, u=i / 300 + 0.0001)).site for i in range(300)}
    assert all(moved[i] == homes[i] for i in homes if homes[i] != "s2")
    assert all(moved[i] in ("s1", "s3") for i in homes)


def test_a_prefix_at_a_many_replica_site_counts_as_held_by_one_replica():
    prof, views = _four()
    prefill = next(s for s in prof.estimators if s.type_name == "ttft_prefill")
    blocks = tuple(range(3000, 3150))  # 2,400 of the 2,500 tokens
    prefill.on_decision(ctx(views, blocks=blocks), Decision("s1", "", ""))
    views = [replace(v, running=8) for v in views]
    views[1] = replace(views[1], running=0)  # s2 the most slack
    assert prof.decide(ctx(views, prompt=2_500, blocks=blocks)).site == "s1"  # one replica: it holds the prefix
    # Behind 20 replicas the request lands where the prefix is with chance 1/20: 120 tokens expected
    # saved, under affinity_tokens, so the most slack decides.
    views[0] = replace(views[0], replicas=20, running=160)
    assert prof.decide(ctx(views, prompt=2_500, blocks=blocks)).site == "s2"


def test_a_prompt_cold_everywhere_takes_the_most_slack_not_a_home():
    prof, views = _four()
    views = [replace(v, running=10 if v.name != "s2" else 0) for v in views]
    assert {prof.decide(ctx(views, prompt=2_500, u=i / 50)).site for i in range(50)} == {"s2"}


def test_weighted_rendezvous_shares_follow_capacity():
    from extproc.gateway.routing.steps.slo.slack import _mix, rendezvous_weight

    wins = {"small": 0, "big": 0}
    for k in range(20_000):
        a = rendezvous_weight(_mix(k * 2654435761 ^ 1), 1.0)
        b = rendezvous_weight(_mix(k * 2654435761 ^ 2), 3.0)
        wins["small" if a > b else "big"] += 1
    assert wins["big"] / 20_000 == pytest.approx(0.75, abs=0.02)


def test_realtime_takes_its_cached_site_only_within_the_band_of_the_best_slack():
    prof, views = _four()
    prefill = next(s for s in prof.estimators if s.type_name == "ttft_prefill")
    blocks = tuple(range(50))
    prefill.on_decision(ctx(views, blocks=blocks), Decision("s4", "", ""))
    views = [replace(v, running=4) for v in views]
    assert prof.decide(ctx(views, sla=SlaClass.realtime, prompt=900, blocks=blocks)).site == "s4"
    # s4 busier by more than the band: the most slack wins, not the cache.
    views[3] = replace(views[3], running=60)
    assert prof.decide(ctx(views, sla=SlaClass.realtime, prompt=900, blocks=blocks)).site != "s4"


def test_when_every_site_misses_the_least_violation_wins_not_the_first_site():
    prof = aigrid()
    drowned_edge = replace(EDGE, waiting=60, running=64)
    drowned_remote = replace(REMOTE, waiting=120, running=200)
    d = prof.decide(ctx([drowned_edge, drowned_remote], prompt=2_000))
    assert d.slack is not None and d.slack < 0 and "least violation" in d.reason
    slack = {v.name: v for v in (drowned_edge, drowned_remote)}
    # The remote's queue spreads over two faster replicas: less violation there.
    assert d.site == "remote", slack
    # Saturated twice as hard, the edge is still worse: the choice follows the numbers, not an order.
    assert prof.decide(ctx([replace(drowned_edge, waiting=10), drowned_remote], prompt=2_000)).site == "edge"


def test_a_site_holding_the_prompts_prefix_predicts_fewer_uncached_tokens():
    prof = aigrid()
    prefill = next(s for s in prof.estimators if s.type_name == "ttft_prefill")
    blocks = tuple(range(100))  # 100 blocks of 16 tokens
    views = [replace(REMOTE, name="r1"), replace(REMOTE, name="r2")]
    prefill.on_decision(ctx(views, blocks=blocks), Decision("r2", "", ""))
    d = prof.decide(ctx(views, prompt=2_000, blocks=blocks))
    assert d.site == "r2" and d.uncached_tokens == 2_000 - 100 * 16
    ablation = aigrid(name="aigrid_no_prefix")
    assert not ablation.needs_prefix_blocks
    assert ablation.decide(ctx(views, prompt=2_000, blocks=blocks)).uncached_tokens == 2_000


def test_the_queue_term_learns_the_work_per_request_per_site():
    prof = aigrid()
    queue = next(s for s in prof.estimators if s.type_name == "ttft_queue")
    base = queue.queued_tokens(replace(REMOTE, waiting=4))
    assert base == 4 * 1000.0  # the prior before any decision
    for _ in range(200):
        queue.on_decision(ctx([REMOTE], prompt=3_000), Decision("remote", "", "", uncached_tokens=3_000))
    later = 1e6  # long after: this gateway's own backlog has drained, the report's estimate is what is left
    assert queue.queued_tokens(replace(REMOTE, waiting=4), later) == pytest.approx(4 * 3_000, rel=0.01)
    assert queue.queued_tokens(replace(EDGE, waiting=4), later) == 4 * 1000.0  # per site


def test_the_prefill_rate_decays():
    prof = aigrid()
    stall = next(s for s in prof.estimators if s.type_name == "tpot_prefill_stall")
    for i in range(50):
        stall.on_decision(ctx([EDGE], prompt=4_000, now=i * 0.02), Decision("edge", "", "", uncached_tokens=4_000))
    hot = stall.rho(EDGE, 1.0)
    assert 0.5 < hot <= cm.MAX_PREFILL_SHARE
    assert stall.rho(EDGE, 21.0) < 0.01  # twenty seconds later, ten horizons


def test_a_site_without_a_speed_gets_the_stated_default_and_says_so():
    text = CFG + "  - {name: bare, endpoints: ['127.0.0.1:3'], rtt_ms: 4}\n"
    prof = aigrid(text)
    bare = site("bare", rtt=4, speed=None)
    d = prof.decide(ctx([EDGE, REMOTE, bare], prompt=1_000))
    assert d.default_speed == ("bare",) and "default speed for bare" in d.reason
    assert prof.decide(ctx([EDGE, REMOTE], prompt=1_000)).default_speed == ()


def test_a_prediction_picker_needs_estimators_and_estimators_need_one():
    c = cfg()
    with pytest.raises(ProfileError) as e:
        build_profile("p", ProfileSpec(picker="slo_slack"), c)
    assert e.value.key == "routing.profiles.p.picker" and "add estimators" in str(e.value)
    with pytest.raises(ProfileError) as e:
        build_profile("p", ProfileSpec(estimators=["ttft_link"], scorers=["least_pressure"]), c)
    assert e.value.key == "routing.profiles.p.estimators" and "slo_slack" in str(e.value)
    with pytest.raises(ProfileError) as e:
        build_profile("p", ProfileSpec(estimators=["least_pressure"], picker="slo_slack"), c)
    assert "is a scorer, not a estimator" in str(e.value) or "not an estimator" in str(e.value) or "not a estimator" in str(e.value)
    with pytest.raises(ProfileError) as e:
        build_profile("p", ProfileSpec(estimators=[StepSpec(type="realtime_reserve", params={"margin": 2})], picker="slo_slack"), c)
    assert e.value.key == "routing.profiles.p.estimators.0.params.margin"


def test_a_bad_speed_is_refused_with_its_key():
    from extproc.gateway.config.load import ConfigError
    with pytest.raises(ConfigError, match="sites.0.speed.prefill_tokens_per_s"):
        cfg("sites:\n  - {name: e, endpoints: ['127.0.0.1:1'], speed: {prefill_tokens_per_s: -1, decode_ms: 5}}\n")
    with pytest.raises(ConfigError, match="sites.0.speed.decode_ms"):
        cfg("sites:\n  - {name: e, endpoints: ['127.0.0.1:1'], speed: {prefill_tokens_per_s: 1000}}\n")


def test_the_gateways_own_backlog_sees_a_prefill_in_progress_that_the_report_does_not():
    prof = aigrid()
    queue = next(s for s in prof.estimators if s.type_name == "ttft_queue")
    # An 8,000-token prefill sent to the remote at t=0; the next report says "1 running, 0 waiting".
    queue.on_decision(ctx([REMOTE], prompt=8_000, now=0.0), Decision("remote", "", "", uncached_tokens=8_000))
    reported = replace(REMOTE, running=1, waiting=0)
    ahead = queue.queued_tokens(reported, 0.05)  # 50 ms later: two replicas x 31,334 tok/s drained 3,133
    assert ahead == pytest.approx(8_000 - 0.05 * 2 * 31_334)
    assert queue.queued_tokens(reported, 1.0) == 0.0  # drained
    no_backlog = build_profile("p", ProfileSpec(estimators=["ttft_link", StepSpec(type="ttft_queue", params={"backlog": False})],
                                                picker="slo_slack"), cfg())
    q2 = no_backlog.estimators[1]
    q2.on_decision(ctx([REMOTE], prompt=8_000, now=0.0), Decision("remote", "", "", uncached_tokens=8_000))
    assert q2.queued_tokens(reported, 0.05) == 0.0  # the report's view alone


def test_bounded_keeps_the_nearest_and_a_keyed_sample_of_the_rest():
    from extproc.gateway.routing.steps.bounded import draw_distinct

    text = "sites:\n" + "".join(f"  - {{name: s{i:02d}, endpoints: ['127.0.0.1:{i + 1}'], rtt_ms: {1 + i}}}\n" for i in range(50))
    c = cfg(text)
    prof = build_profile("b", ProfileSpec(filters=[StepSpec(type="bounded", params={"nearest": 2, "sampled": 3})],
                                          scorers=["least_pressure"]), c)
    (bounded,) = prof.filters
    views = [site(f"s{i:02d}", rtt=1 + i, speed=H100) for i in range(50)]
    bounded.on_snapshot(views, 0.0)
    seen: set[str] = set()
    for i in range(200):
        got = [v.name for v in bounded.filter(ctx(views, u=i / 200), views)]
        assert got[:2] == ["s00", "s01"] and len(set(got)) == 5, got
        seen.update(got)
        assert got == [v.name for v in bounded.filter(ctx(views, u=i / 200), views)]  # the same key, the same sites
    assert len(seen) == 50  # over many keys every site is sampled
    assert bounded.filter(ctx(views[:4]), views[:4]) == views[:4]  # a small grid is left whole
    for m in (1, 2, 7, 12, 48):
        for u in (0.0, 0.37, 0.999):
            idx = draw_distinct(m, 3, u)
            assert len(set(idx)) == min(3, m) and all(0 <= j < m for j in idx)


# ---- holding batch work back while realtime streams are near their TPOT bound --------------------------
def test_batch_work_is_held_while_every_site_is_near_the_realtime_tpot_bound():
    prof, views = _four()
    # 320 streams per site: a decode step (6.37 + 0.104 ms per further stream) within 1 ms of the
    # realtime 40 ms TPOT bound everywhere.
    busy = [replace(v, running=320) for v in views]
    d = prof.decide(ctx(busy, sla=SlaClass.batch, prompt=4_000))
    assert d.hold_ms == 100 and d.reason.startswith("slo hold 100 ms")
    # One site with room: no hold, the batch prompt goes there.
    roomy = [*busy[:3], views[3]]
    d = prof.decide(ctx(roomy, sla=SlaClass.batch, prompt=4_000))
    assert d.hold_ms == 0 and d.site == "s4"
    # Held as long as the cap allows (30% of batch's 10 s TTFT, at most 3 s), then routed all the same.
    assert prof.decide(ctx(busy, sla=SlaClass.batch, prompt=4_000, held=2_900)).hold_ms == 100
    assert prof.decide(ctx(busy, sla=SlaClass.batch, prompt=4_000, held=2_950)).hold_ms == 0
    # The classes that cannot wait are never held.
    for sla in (SlaClass.realtime, SlaClass.standard):
        assert prof.decide(ctx(busy, sla=sla, prompt=4_000)).hold_ms == 0


def test_a_hold_counts_nothing_in_flight_and_advances_no_state():
    from extproc.gateway.loadmap.model import LoadSnapshot, SiteLoad
    from extproc.gateway.routing.router import Router

    names = ("s1", "s2", "s3", "s4")
    text = "sites:\n" + "".join(
        f"  - {{name: {n}, endpoints: ['127.0.0.1:{i + 1}'], rtt_ms: 2, "
        f"speed: {{prefill_tokens_per_s: 31334, decode_ms: 6.37, decode_ms_per_seq: 0.104}}}}\n"
        for i, n in enumerate(names))
    router = Router(cfg(text), profile="aigrid")
    snap = LoadSnapshot({n: SiteLoad(n, 1, 1, 1, None, None, 0.5, 320, 0, 512, updated_at=1.0) for n in names},
                        built_at=1.0, connected=True)
    router.on_snapshot(snap, 1.0)
    f = RequestFeatures(prompt_tokens=4_000, sla=SlaClass.batch)
    d, _ = router.route(f, snap, 1.0)
    assert d.hold_ms > 0 and not any(router.sent_since_report.values())
    d, _ = router.route(replace(f, held_ms=float("inf")), snap, 1.1)
    assert d.hold_ms == 0 and router.sent_since_report[d.site] == 1
