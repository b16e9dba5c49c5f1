"""The routing pipeline, exhaustively, as pure functions over plain data."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from extproc.gateway.config.schema import PolicySettings, SiteRole
from extproc.gateway.request.features import RequestFeatures, SlaClass
from extproc.gateway.routing.framework import Decision, RoutingContext
from extproc.gateway.routing.steps.spill.bands import next_spilling, spill_fraction, update_spill_states
from oneshot import CONVERSATION, Case, decide
from extproc.gateway.routing.views import SiteView

P = PolicySettings()


def view(name: str, pressure: float | None = 0.1, *, role: SiteRole | None = None, rtt: float | None = None,
         drained: bool = False, healthy: bool | None = True) -> SiteView:
    role = role or (SiteRole.edge if name == "edge" else SiteRole.remote)
    rtt = rtt if rtt is not None else (1.0 if name == "edge" else 8.0)
    return SiteView(name, role, rtt, drained, healthy if pressure is not None or healthy is False else None, pressure, 0.1)


def ctx(views, *, sla=SlaClass.standard, u=0.5, spilling=None, prev=None, default="edge", policy=P) -> Case:
    if spilling is None:
        spilling = update_spill_states(views, {}, policy)
    features = RequestFeatures(sla=sla, conversation_key=CONVERSATION if prev else None)
    return Case(RoutingContext(features, views, policy, default, u), spilling, prev)


def test_idle_edge_keeps_everything_home():
    for sla in SlaClass:
        for u in (0.0, 0.3, 0.99):
            d = decide(ctx([view("edge", 0.1), view("remote", 0.0)], sla=sla, u=u))
            assert d.site == "edge", (sla, u, d)
            assert d.reason


def test_spill_is_proportional_to_edge_load():
    # Sweep the uniform draw on a fine grid: the share sent remote equals the spill fraction.
    fractions = []
    for p in (0.5, 0.6, 0.7, 0.8, 0.9, 1.0):
        views = [view("edge", p), view("remote", 0.1)]
        spilling = {"edge": True}
        grid = [i / 1000 for i in range(1000)]
        remote = sum(decide(ctx(views, u=u, spilling=spilling)).site == "remote" for u in grid) / len(grid)
        expect = spill_fraction(p, True, SlaClass.standard, P)
        assert remote == pytest.approx(expect, abs=0.002)
        fractions.append(remote)
    assert fractions == sorted(fractions), "more load, more spill"
    assert 0 < fractions[0] < fractions[-1] <= P.max_spill
    assert fractions[-1] < 1.0, "never all-or-nothing"


def test_batch_spills_more_readily_than_standard():
    for p in (0.6, 0.7, 0.8):
        std = spill_fraction(p, True, SlaClass.standard, P)
        bat = spill_fraction(p, True, SlaClass.batch, P)
        assert bat > std
        assert bat <= P.max_spill
    assert spill_fraction(0.9, True, SlaClass.realtime, P) == 0.0


def test_hysteresis_band():
    # Rising: off until spill_on; falling: on until below spill_off.
    assert not next_spilling(False, P.spill_on - 0.01, P)
    assert next_spilling(False, P.spill_on, P)
    assert next_spilling(True, P.spill_off + 0.01, P)
    assert not next_spilling(True, P.spill_off, P)
    assert not next_spilling(True, None, P), "unknown load stops spilling"
    # A pressure oscillating inside the band does not flip the state either way.
    for start in (False, True):
        state = start
        for p in (0.5, 0.47, 0.53, 0.46, 0.54):
            state = next_spilling(state, p, P)
        assert state == start


def test_no_spill_to_a_more_loaded_or_full_site():
    views = [view("edge", 0.8), view("remote", 0.9)]
    for u in (0.0, 0.2, 0.5):
        d = decide(ctx(views, u=u, spilling={"edge": True}))
        assert d.site == "edge"
        assert "no less-loaded site" in d.reason


def test_spill_weighted_among_several_remotes():
    views = [view("edge", 1.0), view("r1", 0.05, rtt=8), view("r2", 0.45, rtt=9)]
    grid = [i / 2000 for i in range(2000)]
    picks = [decide(ctx(views, u=u, spilling={"edge": True})).site for u in grid]
    r1, r2 = picks.count("r1"), picks.count("r2")
    assert r1 > 0 and r2 > 0, "no herding onto one remote"
    # Weights are headroom: (0.85-0.05) : (0.85-0.45) = 2 : 1.
    assert r1 / r2 == pytest.approx(2.0, rel=0.05)


def test_realtime_takes_lowest_rtt_with_headroom():
    d = decide(ctx([view("edge", 0.5), view("remote", 0.0)], sla=SlaClass.realtime))
    assert (d.site, d.step) == ("edge", "realtime")
    d = decide(ctx([view("edge", 0.9), view("remote", 0.3)], sla=SlaClass.realtime))
    assert d.site == "remote"
    # No headroom anywhere: least loaded.
    d = decide(ctx([view("edge", 1.2), view("remote", 0.95)], sla=SlaClass.realtime))
    assert d.site == "remote" and "no headroom" in d.reason
    # RTT, not role, decides: a remote site closer than the edge wins.
    d = decide(ctx([view("edge", 0.1, rtt=20), view("remote", 0.1, rtt=2)], sla=SlaClass.realtime))
    assert d.site == "remote"


def test_conversation_affinity_while_headroom():
    views = [view("edge", 0.1), view("remote", 0.5)]
    d = decide(ctx(views, prev="remote"))
    assert (d.site, d.step) == ("remote", "affinity")
    # Lost headroom: affinity yields to the policy.
    views = [view("edge", 0.1), view("remote", 0.9)]
    d = decide(ctx(views, prev="remote"))
    assert d.site == "edge" and d.step != "affinity"
    # A drained previous site is never kept.
    views = [view("edge", 0.1), view("remote", 0.1, drained=True)]
    assert decide(ctx(views, prev="remote")).site == "edge"


def test_stale_or_missing_load_falls_back_to_default():
    views = [view("edge", None), view("remote", None)]
    d = decide(ctx(views, default="remote"))
    assert (d.site, d.step) == ("remote", "fallback")
    assert "no fresh load data" in d.reason
    # Only the stale site is dropped when another is fresh.
    views = [view("edge", None), view("remote", 0.2)]
    assert decide(ctx(views)).site == "remote"


def test_never_drained_or_unhealthy_when_another_is_healthy():
    names = ("edge", "r1", "r2")
    for flags in itertools.product(("ok", "drained", "unhealthy", "stale"), repeat=3):
        views = []
        for n, f in zip(names, flags):
            if f == "ok":
                views.append(view(n, 0.3))
            elif f == "drained":
                views.append(view(n, 0.1, drained=True))
            elif f == "unhealthy":
                views.append(view(n, None, healthy=False))
            else:
                views.append(view(n, None))
        for sla, u in itertools.product(SlaClass, (0.0, 0.5, 0.99)):
            for prev in (None, *names):
                d = decide(ctx(views, sla=sla, u=u, prev=prev))
                chosen = dict(zip(names, flags))[d.site]
                assert d.reason
                if "ok" in flags:
                    assert chosen == "ok", (flags, sla, u, prev, d)
                elif any(f in ("stale",) for f in flags):
                    assert chosen in ("stale",), (flags, d)
                elif "unhealthy" in flags:
                    # Nothing healthy or unknown: a non-drained site still, never a drained one.
                    assert chosen == "unhealthy", (flags, d)
                else:
                    assert d.site == "edge" and "all sites drained" in d.reason


def test_default_site_drained_falls_back_to_lowest_rtt_other():
    views = [view("edge", None, drained=True), view("r1", None, rtt=20), view("r2", None, rtt=5)]
    d = decide(ctx(views, default="edge"))
    assert d.site == "r2" and "excluded" in d.reason


@given(
    pressures=st.lists(st.one_of(st.none(), st.floats(0, 2)), min_size=1, max_size=5),
    drained=st.lists(st.booleans(), min_size=5, max_size=5),
    u=st.floats(0, 1, exclude_max=True),
    sla=st.sampled_from(list(SlaClass)),
)
def test_any_snapshot_gets_a_valid_decision(pressures, drained, u, sla):
    names = [f"s{i}" for i in range(len(pressures))]
    views = [view(n, p, rtt=float(i), drained=drained[i]) for i, (n, p) in enumerate(zip(names, pressures))]
    d = decide(ctx(views, sla=sla, u=u, default=names[0]))
    assert isinstance(d, Decision)
    assert d.site in names and d.reason
    if any(not v.drained for v in views):
        assert not next(v for v in views if v.name == d.site).drained


def test_baseline_strategies():
    ll = PolicySettings(strategy="least_loaded")
    views = [view("edge", 0.3), view("remote", 0.2)]
    for sla in SlaClass:
        d = decide(ctx(views, sla=sla, prev="edge", policy=ll))
        assert (d.site, d.step) == ("remote", "least_loaded")
    one = PolicySettings(strategy="default_only")
    views = [view("edge", 1.5), view("remote", 0.0)]
    assert decide(ctx(views, policy=one)).site == "edge"
    # Filters still apply to baselines: a drained default is not used.
    views = [view("edge", 0.1, drained=True), view("remote", 0.0)]
    assert decide(ctx(views, policy=one)).site == "remote"


def test_rtt_jitter_within_tolerance_does_not_flip_home():
    # Measured RTTs on one host: remote a hair faster than edge. Edge stays home (role breaks the tie).
    views = [view("edge", 0.1, rtt=0.9), view("remote", 0.1, rtt=0.6)]
    for sla in SlaClass:
        assert decide(ctx(views, sla=sla)).site == "edge"
    # Beyond the tolerance, the closer site is home whatever its role.
    views = [view("edge", 0.1, rtt=9.0), view("remote", 0.1, rtt=1.0)]
    assert decide(ctx(views)).site == "remote"
    assert decide(ctx(views, sla=SlaClass.realtime)).site == "remote"
