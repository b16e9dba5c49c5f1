"""The compressor behind real Envoy: a long RAG request reaches the site compressed, with a correct
content-length; a short one reaches it byte for byte. Coarse step alone, then with the fine step."""

from __future__ import annotations

import base64
import json
import random

import pytest

from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec

pytestmark = pytest.mark.slow
CHAT = "/v1/chat/completions"


def rag_body(seed: int) -> tuple[bytes, str]:
    item = synth_rag_item(random.Random(seed), SyntheticRagSpec(prompt_tokens={"median": 2500, "sigma": 0.1, "min": 2000, "max": 3000}, documents_min=6, documents_max=6, japanese_share=0.0))
    body = {"model": "llama-3.1-8b", "temperature": 0.2, "stream": True, "max_tokens": 64,
            "messages": rag_messages(item)}
    return json.dumps(body).encode(), item.answer


def arrived(st, site: str = "edge") -> tuple[bytes, dict]:
    rec = st.records(site)[-1]
    return base64.b64decode(rec["body_b64"]), rec["headers"]


def _compression(**kw) -> dict:
    # The load test's synthetic RAG documents are near-copies of each other, which the quality floor keeps
    # (a flat ranking); this test is about the Envoy path, so the floor gets no room (max factor 1).
    return {"compression": {"enabled": True, "ranker": "bm25", "fixed_rate": 0.5, "break_even": False,
                            "min_prompt_tokens": 200, "deadline_ms": 5000, "coarse_floor_max_overshoot": 0.0, **kw}}


@pytest.mark.parametrize("fine", [False, True], ids=["coarse-only", "coarse+fine"])
def test_long_rag_compressed_short_unchanged(stack_factory, tiny_model_dir, fine):
    st = stack_factory()
    gw = st.add_gateway(extra=_compression(**({"model_path": str(tiny_model_dir)} if fine else {})))
    st.publish_idle(gw)

    body, answer = rag_body(7)
    r = gw.post(CHAT, body)
    assert r.status == 200, r.body
    got, h = arrived(st)
    assert int(h["content-length"]) == len(got)
    assert len(got) < 0.8 * len(body), (len(got), len(body))
    sent, new = json.loads(body), json.loads(got)
    # Only the prompt changed: every other field, the system prompt and the question are intact.
    assert {k: v for k, v in new.items() if k != "messages"} == {k: v for k, v in sent.items() if k != "messages"}
    assert new["messages"][0] == sent["messages"][0]
    question = sent["messages"][1]["content"].rsplit("Question: ", 1)[1]
    assert new["messages"][1]["content"].endswith("Question: " + question)
    assert h["x-aigrid-compression"].startswith("tokens=")
    if not fine:
        # The question-aware coarse step kept the document that answers it (the tiny fine-step model's
        # word choices are random, so only the coarse case can promise this).
        assert answer in new["messages"][1]["content"]
    assert gw.metric("aigrid_rewrites_total") == 1.0

    short = json.dumps({"model": "llama-3.1-8b", "messages": [{"role": "user", "content": "What is the capital of Japan?"}]}).encode()
    assert gw.post(CHAT, short).status == 200
    got, h = arrived(st)
    assert got == short
    assert "skip=" in h["x-aigrid-compression"]
