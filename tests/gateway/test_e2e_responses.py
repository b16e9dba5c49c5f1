"""The Responses API end to end: real Envoy, real Redis, `aigrid serve`, recording stand-in sites that
answer in the Responses shape with a fresh `resp_` id each time.

A conversation chained by `previous_response_id` (each turn sends only its new input) stays on one site
with the edge full, because the response side ties each response id to the conversation's key; and a
long RAG input is compressed under the same rules as chat.
"""

from __future__ import annotations

import base64
import json
import random

import pytest
from harness import wait_pressure, wait_until

from extproc.tools.workload.spec import SyntheticRagSpec
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item

pytestmark = pytest.mark.slow

RESPONSES = "/v1/responses"


def _learned(gw) -> float:  # type: ignore[no-untyped-def]
    return gw.metric("aigrid_response_chains_learned_total") or 0.0


@pytest.mark.parametrize("via", ["ext_proc", "access_log"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
def test_a_previous_response_id_chain_stays_on_one_site(stack_factory, via: str, stream: bool) -> None:
    """Edge full (spilling at its maximum), remote idle: the keyed split sends most conversations remote.
    Four turns each, every turn after the first carrying only `previous_response_id` and a new input:
    every conversation stays on one site, and the chain table found every previous response."""
    st = stack_factory()
    gw = st.add_gateway(extra={"observability": {"usage": True, "usage_via": via}})
    st.publish_load("edge", kv=1.0, waiting=40)
    st.publish_load("remote", kv=0.05)
    wait_pressure(gw, "edge", lambda p: p >= 1.0)
    wait_pressure(gw, "remote", lambda p: p < 0.1)
    where: dict[int, set[str]] = {}
    convs, turns = 12, 4
    for conv in range(convs):
        prev: str | None = None
        for turn in range(turns):
            body: dict = {"model": "m", "instructions": "You are a helpful assistant.", "stream": stream,
                          "input": f"conversation {conv}: plan a trip" if prev is None else f"follow-up {turn}"}
            if prev is not None:
                body["previous_response_id"] = prev
            learned = _learned(gw)
            r = gw.post(RESPONSES, json.dumps(body).encode())
            assert r.status == 200, r.body
            text = r.body.decode()
            if stream:
                created = next(line for line in text.splitlines() if line.startswith("data: ") and "response.created" in line)
                resp = json.loads(created[len("data: "):])["response"]
            else:
                resp = json.loads(text)
            where.setdefault(conv, set()).add(resp["aigrid_site"])
            prev = resp["id"]
            # The response side tells the gateway which conversation this id continues. A client that
            # sends the next turn before that (a race of a millisecond) is routed by the id itself.
            wait_until(lambda learned=learned: _learned(gw) > learned, 10, "the response id learned")
        st.publish_load("edge", kv=1.0, waiting=40)
        st.publish_load("remote", kv=0.05)
    assert all(len(s) == 1 for s in where.values()), where
    assert sum(1 for s in where.values() if s == {"remote"}) >= convs // 2, where
    assert gw.metric("aigrid_response_chains_lookups_total", 'result="found"') == convs * (turns - 1)
    assert gw.metric("aigrid_response_chains_lookups_total", 'result="missed"') == 0
    # The summary header carries the conversation's key as a digest, never the client's text.
    import re

    seen = [rec["headers"].get("x-aigrid-obs", "") for s in st.sites for rec in st.records(s)]
    assert seen and all(re.fullmatch(r"1;[a-z_]+;standard;\d\d;m;r:[0-9a-f]{16}", v) for v in seen), seen[:3]


def _rag_input(seed: int) -> tuple[list[dict], str]:
    item = synth_rag_item(random.Random(seed), SyntheticRagSpec(
        prompt_tokens={"median": 2500, "sigma": 0.1, "min": 2000, "max": 3000}, documents_min=6, documents_max=6,
        japanese_share=0.0))
    msgs = rag_messages(item)
    system = next(m["content"] for m in msgs if m["role"] == "system")
    items = [{"type": "message", "role": m["role"], "content": [{"type": "input_text", "text": m["content"]}]}
             for m in msgs if m["role"] != "system"]
    return [{"system": system}, *items], item.answer


@pytest.mark.parametrize("shape", ["items", "string"])
def test_a_long_responses_input_is_compressed_like_chat(stack_factory, shape: str) -> None:
    st = stack_factory()
    gw = st.add_gateway(extra={"compression": {
        "enabled": True, "ranker": "bm25", "fixed_rate": 0.5, "break_even": False, "min_prompt_tokens": 200,
        "deadline_ms": 5000, "coarse_floor_max_overshoot": 0.0}})
    st.publish_idle(gw)
    head, *items = _rag_input(7)[0]
    question_text = items[-1]["content"][0]["text"]
    inp: object = items if shape == "items" else question_text
    body = json.dumps({"model": "m", "instructions": head["system"], "input": inp, "max_output_tokens": 64,
                       "store": True}).encode()
    r = gw.post(RESPONSES, body)
    assert r.status == 200, r.body
    rec = next(rec for s in st.sites for rec in st.records(s) if rec["path"] == RESPONSES)
    got = base64.b64decode(rec["body_b64"])
    assert int(rec["headers"]["content-length"]) == len(got)
    assert rec["headers"]["x-aigrid-compression"].startswith("tokens="), rec["headers"]["x-aigrid-compression"]
    assert len(got) < 0.8 * len(body), (len(got), len(body))
    sent, new = json.loads(body), json.loads(got)
    # Only the input changed; the instructions (the system prompt) and the question at the end are intact.
    assert {k: v for k, v in new.items() if k != "input"} == {k: v for k, v in sent.items() if k != "input"}
    question = question_text.rsplit("Question: ", 1)[1]
    last = new["input"][-1]["content"][0]["text"] if shape == "items" else new["input"]
    assert last.endswith("Question: " + question)
    assert gw.metric("aigrid_rewrites_total") == 1.0
    # The policy says no (a short input): the body goes byte for byte.
    short = json.dumps({"model": "m", "input": "What is the capital of Japan?"}).encode()
    assert gw.post(RESPONSES, short).status == 200
    rec = [rec for s in st.sites for rec in st.records(s) if rec["path"] == RESPONSES]
    last_rec = max(rec, key=lambda x: x["t"])
    assert base64.b64decode(last_rec["body_b64"]) == short
    assert "skip=" in last_rec["headers"]["x-aigrid-compression"]
