"""Routing framework end to end: real Envoy, real Redis, `aigrid serve`, recording stand-in sites.

Three sites, the headers-only path, the model filter and the grid's model list, /v1/responses and
embeddings, and a conversation kept on one site by two gateway replicas that share only the load map.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from harness import chat_body, http, wait_pressure

pytestmark = pytest.mark.slow

CHAT = "/v1/chat/completions"
THREE = ("edge", "regional", "far")


def _counts(st) -> dict[str, int]:
    return {s: len(st.records(s)) for s in st.sites}


def _delta(after: dict[str, int], before: dict[str, int], key: str) -> int:
    return after.get(key, 0) - before.get(key, 0)


def test_three_sites_route_on_load_and_fail_over_in_rtt_order(stack_factory):
    st = stack_factory(sites=THREE)
    over = {"regional": {"role": "regional", "rtt_ms": 4}, "far": {"role": "far", "rtt_ms": 30}}
    # The global least-loaded site (max_score), not the built-in least_loaded's two random choices.
    lowest = {"profile": "lowest", "profiles": {"lowest": {"scorers": ["least_pressure"], "picker": "max_score"}}}
    gw = st.add_gateway(extra={"routing": lowest}, site_overrides=over)
    st.publish_load("edge", kv=0.9)
    st.publish_load("regional", kv=0.6)
    st.publish_load("far", kv=0.05)
    for s, lo in (("edge", 0.85), ("regional", 0.55), ("far", 0.0)):
        wait_pressure(gw, s, lambda p, lo=lo: p >= lo)
    before = gw.stats()
    for i in range(6):
        assert gw.post(CHAT, chat_body(f"q{i}")).status == 200
    after = gw.stats()
    # Least loaded with in-flight counting: far (64 capacity by default) absorbs all six.
    assert _counts(st) == {"edge": 0, "regional": 0, "far": 6}
    assert _delta(after, before, "cluster.site_far.upstream_rq_total") == 6
    # Failover order of far's route: far, then the others by RTT (edge 1 ms, regional 4 ms).
    cfg = (st.root / "gw0-envoy.yaml").read_text()
    assert "aigrid_via_far" in cfg
    import yaml
    clusters = {c["name"]: c for c in yaml.safe_load(cfg)["static_resources"]["clusters"]}
    agg = clusters["aigrid_via_far"]["cluster_type"]["typed_config"]["clusters"]
    assert agg == ["site_far", "site_edge", "site_regional"]
    # Far dies: its requests are retried on the next priority (edge), none fails.
    st.site_procs["far"].stop()
    st.clear_records()
    for i in range(4):
        assert gw.post(CHAT, chat_body(f"after far died {i}")).status == 200
    served = {s: len(st.records(s)) for s in ("edge", "regional")}
    assert sum(served.values()) == 4, served


def test_headers_only_profile_never_receives_the_body(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(extra={"routing": {"profile": "least_loaded"}})
    st.publish_idle(gw)
    body = chat_body("x" * 5000)
    for _ in range(5):
        r = gw.post(CHAT, body)
        assert r.status == 200
    m = gw.metric("aigrid_processor_messages_total", 'phase="request_headers"')
    assert m is not None and m >= 5
    assert gw.metric("aigrid_processor_messages_total", 'phase="request_body"') in (None, 0.0)
    # The body arrived untouched and the routing header was set in the headers phase.
    recs = st.records("edge") + st.records("remote")
    assert len(recs) == 5 and all(r["headers"]["x-aigrid-site"] in ("edge", "remote") for r in recs)
    import base64
    assert all(base64.b64decode(r["body_b64"]) == body for r in recs)
    # The default profile (affinity reads the body) does receive it: one more gateway to compare.
    gw2 = st.add_gateway()
    st.publish_idle(gw2)
    assert gw2.post(CHAT, body).status == 200
    assert gw2.metric("aigrid_processor_messages_total", 'phase="request_body"') == 1.0


def test_model_filter_model_list_and_unknown_model(stack_factory):
    st = stack_factory()
    over = {"edge": {"models": ["small"]}, "remote": {"models": ["small", "large"]}}
    gw = st.add_gateway(site_overrides=over)
    st.publish_idle(gw)
    # The grid's model list is the union over its sites, answered by the gateway.
    r = http("GET", gw.url("/v1/models"))
    assert r.status == 200, r.body
    listing = json.loads(r.body)
    assert listing["object"] == "list" and [m["id"] for m in listing["data"]] == ["large", "small"]
    assert _counts(st) == {"edge": 0, "remote": 0}
    # "large" is only on remote: the filter sends it there although edge is home and idle.
    for i in range(4):
        assert gw.post(CHAT, chat_body(f"big {i}", model="large")).status == 200
        assert gw.post(CHAT, chat_body(f"small {i}", model="small")).status == 200
    recs = {s: [json.loads(__import__("base64").b64decode(r["body_b64"]))["model"] for r in st.records(s)] for s in st.sites}
    assert recs["remote"].count("large") == 4 and "large" not in recs["edge"]
    # A model no site serves: vLLM's 404 shape from the gateway, nothing forwarded, counted.
    before = _counts(st)
    r = gw.post(CHAT, chat_body("who?", model="nope"))
    assert r.status == 404
    err = json.loads(r.body)["error"]
    assert err["type"] == "NotFoundError" and err["code"] == 404 and "nope" in err["message"]
    assert _counts(st) == before
    assert gw.metric("aigrid_gateway_answers_total", 'kind="model_not_found"') == 1.0
    # Drain remote: "large" leaves the model list.
    subprocess.run([sys.executable, "-m", "extproc.cli", "site", "drain", "remote", "--config", str(gw.config_path)],
                   check=True, capture_output=True)
    from harness import wait_until
    wait_until(lambda: [m["id"] for m in json.loads(http("GET", gw.url("/v1/models")).body)["data"]] == ["small"], 10, "drained site's models gone")


def test_responses_api_and_embeddings_are_routed_and_counted(stack_factory):
    st = stack_factory()
    gw = st.add_gateway(extra={"routing": {"profile": "least_loaded"}})
    st.publish_idle(gw)
    body = json.dumps({"model": "m", "input": [{"role": "user", "content": "hello " * 50}], "instructions": "be brief"}).encode()
    assert gw.post("/v1/responses", body).status == 200
    emb = json.dumps({"model": "m", "input": ["a", "b"]}).encode()
    for _ in range(6):
        assert gw.post("/v1/embeddings", emb).status == 200
    # Both idle: in-flight counting alternates the least-loaded choice, so embeddings were counted.
    c = _counts(st)
    assert sum(c.values()) == 7 and min(c.values()) >= 2, c
    paths = sorted(r["path"] for s in st.sites for r in st.records(s))
    assert paths.count("/v1/embeddings") == 6 and paths.count("/v1/responses") == 1
    assert gw.metric("aigrid_passthrough_total", 'reason="path"') == 6.0


def test_two_gateways_keep_a_conversation_on_one_site(stack_factory):
    """Edge full (spilling at its maximum), remote idle: the split sends ~90% of conversations remote.
    Turns alternate between two gateways that share only Redis; every conversation stays on one site."""
    st = stack_factory()
    a = st.add_gateway()
    b = st.add_gateway()
    st.publish_load("edge", kv=1.0, waiting=40)
    st.publish_load("remote", kv=0.05)
    for g in (a, b):
        wait_pressure(g, "edge", lambda p: p >= 1.0)
        wait_pressure(g, "remote", lambda p: p < 0.1)
    where: dict[int, set[str]] = {}
    for conv in range(16):
        msgs = [{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": f"conversation {conv}: plan a trip"}]
        for turn in range(3):
            gw = (a, b)[(conv + turn) % 2]
            r = gw.post(CHAT, json.dumps({"model": "m", "messages": msgs}).encode())
            assert r.status == 200
            site = json.loads(r.body)["aigrid_site"]
            where.setdefault(conv, set()).add(site)
            msgs = [*msgs, {"role": "assistant", "content": f"answer {turn}"}, {"role": "user", "content": f"follow-up {turn}"}]
        # Keep the load view fresh on both (reports reset in-flight counts, as agents' do).
        st.publish_load("edge", kv=1.0, waiting=40)
        st.publish_load("remote", kv=0.05)
    assert all(len(s) == 1 for s in where.values()), where
    used = {next(iter(s)) for s in where.values()}
    assert used == {"edge", "remote"} or used == {"remote"}, used
    assert sum(1 for s in where.values() if s == {"remote"}) >= 10


def test_bad_profile_refused_at_start(tmp_path):
    cfg = tmp_path / "a.yaml"
    cfg.write_text("sites: [{name: edge, endpoints: ['127.0.0.1:1']}]\nrouting:\n  profile: p\n  profiles:\n    p: {scorers: [{type: queue, params: {x: 1}}]}\n")
    r = subprocess.run([sys.executable, "-m", "extproc.cli", "serve", "-c", str(cfg)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "routing.profiles.p.scorers.0.params.x" in r.stderr and "Extra inputs" in r.stderr, r.stderr


def test_gateways_count_each_others_in_flight_requests(stack_factory):
    """Two replicas on one map: what A sent since the last report shows up in B's pressure view."""
    st = stack_factory()
    a = st.add_gateway(extra={"routing": {"profile": "least_loaded"}})
    b = st.add_gateway(extra={"routing": {"profile": "least_loaded"}})
    st.publish_idle(a, b)
    for i in range(6):
        assert a.post(CHAT, chat_body(f"burst {i}")).status == 200
    from harness import wait_until

    def own() -> dict[str, float | None]:
        return {s: a.metric("aigrid_site_in_flight", f'site="{s}",source="self"') for s in st.sites}

    wait_until(lambda: sum(v or 0 for v in own().values()) == 6, 5, "A's gauges to show its six requests")
    own = own()
    wait_until(lambda: all(b.metric("aigrid_site_in_flight", f'site="{s}",source="peers"') == own[s] for s in st.sites),
               5, "B to see A's in-flight counts")
    # B never sent anything itself.
    assert all(b.metric("aigrid_site_in_flight", f'site="{s}",source="self"') == 0 for s in st.sites)
    # A new report from each site resets everyone's count for it.
    st.publish_idle(a, b)
    wait_until(lambda: all(b.metric("aigrid_site_in_flight", f'site="{s}",source="peers"') == 0 for s in st.sites),
               5, "peer counts reset by the new reports")
