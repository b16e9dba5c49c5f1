"""rewriter.py: the gateway-facing rewriter: policy, headers, metrics, bad input, construction."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry

sys.path.insert(0, str(Path(__file__).parent))

from fakes import EveryOther, make_request  # noqa: E402

from extproc.gateway.compression.core.coarse import CoarseRanker  # noqa: E402
from extproc.gateway.compression.core.fine import FineResult  # noqa: E402
from extproc.gateway.compression.core.pipeline import model_rate  # noqa: E402
from extproc.gateway.compression.rewriter import (  # noqa: E402
    HEADER,
    CompressionRewriter,
    build_compression_rewriter,
)
from extproc.gateway.compression.core.segment import is_subsequence, units  # noqa: E402
from extproc.gateway.config.compression import CompressionSettings  # noqa: E402
from extproc.gateway.config.schema import GatewayConfig  # noqa: E402
from extproc.gateway.compression.seam import Rewrite, Skip  # noqa: E402
from extproc.gateway.request.features import SlaClass  # noqa: E402

FILL = ("The quarterly review covered staffing, the new warehouse lease and the migration of the ticketing "
        "system to a managed service, which the operations team expects to finish before the summer. ")


def rag_body(n_docs: int = 6, reps: int = 4) -> dict:
    docs = [f"Document [{i + 1}]: Ticket INC-{4800 + i} was closed by agent number {i} on Friday. " + FILL * reps
            for i in range(n_docs)]
    return {
        "model": "llama", "stream": True, "temperature": 0.3, "max_tokens": 99,
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Use the documents.\n\n" + "\n\n".join(docs) + "\n\nQuestion: Who closed ticket INC-4803?"},
        ],
    }


def settings(**kw) -> CompressionSettings:
    # A generous deadline: these tests are about what the rewriter does, never about how fast.
    base = dict(enabled=True, min_prompt_tokens=100, fixed_rate=0.4, break_even=False, deadline_ms=30_000)
    base.update(kw)
    return CompressionSettings(**base)


def rewriter(fine=None, ranker="bm25", registry=None, **kw) -> CompressionRewriter:
    return CompressionRewriter(settings(**kw), fine=fine, ranker=CoarseRanker(ranker) if ranker else None, registry=registry)


async def test_rag_request_is_compressed() -> None:
    reg = CollectorRegistry()
    fine = EveryOther()
    # The six documents differ only in a ticket number: a flat ranking below the gold one. Without room for
    # the quality floor (max factor 1) the budget decides.
    rw = rewriter(fine, registry=reg, coarse_floor_max_overshoot=0.0)
    body = rag_body()
    res = await rw.rewrite(make_request(body))
    assert isinstance(res, Rewrite)
    new = orjson.loads(res.body)
    assert {k: v for k, v in new.items() if k != "messages"} == {k: v for k, v in body.items() if k != "messages"}
    assert new["messages"][0] == body["messages"][0]
    text = new["messages"][1]["content"]
    assert text.endswith("Question: Who closed ticket INC-4803?") and text.startswith("Use the documents.")
    assert "INC-4803" in text.split("Question")[0]  # the gold document survived, its identifier intact
    assert is_subsequence(units(text), units(body["messages"][1]["content"]))
    assert len(res.body) < len(orjson.dumps(body))
    h = res.headers[HEADER]
    assert h.startswith("tokens=") and "docs=6->" in h and "ranker=bm25" in h and "fine=ok" in h
    assert "coarse=rate" in h
    assert reg.get_sample_value("aigrid_compression_coarse_decisions_total", {"decision": "rate"}) == 1
    assert reg.get_sample_value("aigrid_compression_requests_total", {"outcome": "compressed"}) == 1
    assert reg.get_sample_value("aigrid_compression_tokens_before_total") > reg.get_sample_value("aigrid_compression_tokens_after_total")
    assert reg.get_sample_value("aigrid_compression_documents_dropped_total") >= 1
    await rw.close()
    assert fine.closed


async def test_flat_ranking_binds_the_quality_floor_and_says_so() -> None:
    reg = CollectorRegistry()
    # Coarse only; the six documents are a sixth of the prompt each, so the floor may overshoot by 0.4.
    rw = rewriter(None, registry=reg, coarse_floor_max_overshoot=0.4)
    res = await rw.rewrite(make_request(rag_body()))
    assert isinstance(res, Rewrite)
    h = res.headers[HEADER]
    assert "coarse=floor" in h
    kept = int(h.split("docs=6->")[1].split()[0].split("+")[0])
    # The rate (0.4) would keep 2 of 6 equal-sized documents; the tied siblings add more, within 0.4.
    assert 2 < kept <= 4
    requested = float(h.split(" rate=")[1].split()[0])
    achieved = float(h.split(" achieved=")[1].split()[0])
    assert requested < achieved <= requested + 0.4 + 0.01
    assert reg.get_sample_value("aigrid_compression_coarse_decisions_total", {"decision": "floor"}) == 1
    assert reg.get_sample_value("aigrid_compression_achieved_rate_count", {"floor": "bound"}) == 1
    assert reg.get_sample_value("aigrid_compression_requested_rate_sum") == pytest.approx(requested, abs=0.005)
    assert reg.get_sample_value("aigrid_compression_achieved_rate_sum", {"floor": "bound"}) == pytest.approx(
        achieved, abs=0.005)
    text = orjson.loads(res.body)["messages"][1]["content"]
    assert "INC-4803" in text.split("Question")[0]
    await rw.close()


async def test_coarse_only_without_a_model() -> None:
    rw = rewriter(None)
    res = await rw.rewrite(make_request(rag_body()))
    assert isinstance(res, Rewrite) and "fine=none" in res.headers[HEADER]
    await rw.close()


@pytest.mark.parametrize(
    ("kw", "req_kw", "reason"),
    [
        (dict(fixed_rate=None), dict(pressure=None), "unknown_load"),
        (dict(fixed_rate=None), dict(pressure=0.1), "idle"),
        (dict(min_prompt_tokens=100_000), {}, "short"),
        (dict(break_even=True, fixed_rate=None, prefill_tokens_per_s=1e9), dict(pressure=0.95, waiting=0), "break_even"),
    ],
)
async def test_policy_skips_carry_a_reason_header(kw, req_kw, reason) -> None:
    reg = CollectorRegistry()
    rw = rewriter(EveryOther(), registry=reg, **kw)
    res = await rw.rewrite(make_request(rag_body(), **req_kw))
    assert isinstance(res, Skip) and res.reason == reason
    assert res.headers[HEADER].startswith(f"skip={reason}")
    assert reg.get_sample_value("aigrid_compression_requests_total", {"outcome": reason}) == 1


async def test_load_driven_rate_follows_pressure_and_class() -> None:
    fine = EveryOther()
    rw = rewriter(fine, ranker=None, fixed_rate=None)
    await rw.rewrite(make_request(rag_body(), pressure=2.0, sla=SlaClass.batch))
    await rw.rewrite(make_request(rag_body(), pressure=2.0, sla=SlaClass.realtime))
    (_, r_batch), (_, r_rt) = fine.calls
    assert r_batch < r_rt


async def test_deadline_skip_for_a_slow_compressor_and_a_1mb_document() -> None:
    class Slow(EveryOther):
        def tokens_per_second(self) -> float | None:
            return 1000.0

    big = {"model": "m", "messages": [{"role": "user", "content": ("lorem ipsum dolor sit amet " * 40_000) + "\n\nSummarise."}]}
    assert len(orjson.dumps(big)) > 1_000_000
    rw = rewriter(Slow(), ranker=None, deadline_ms=5_000)  # 270k tokens at 1,000 tok/s cannot fit in 5 s
    res = await rw.rewrite(make_request(big))
    assert isinstance(res, Skip) and res.reason == "deadline"


async def test_1mb_rag_document_coarse_only() -> None:
    body = rag_body(3)
    body["messages"][1]["content"] = body["messages"][1]["content"].replace("Document [2]: ", "Document [2]: " + "filler text " * 90_000)
    rw = rewriter(None, deadline_ms=60_000)  # a generous deadline: this test is about what, not how fast
    res = await rw.rewrite(make_request(body))
    assert isinstance(res, Rewrite) and len(res.body) < 100_000  # the huge irrelevant document went
    await rw.close()


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "messages": [{"role": "user", "content": None}]},
        {"model": "m", "messages": [{"role": "user", "content": ""}]},
        {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]},
        {"model": "m", "messages": []},
        {"model": "m"},
    ],
)
async def test_nothing_to_compress(body: dict) -> None:
    res = await rewriter(EveryOther()).rewrite(make_request(body))
    assert isinstance(res, Skip) and res.reason == "nothing_to_compress"


async def test_other_paths_are_skipped() -> None:
    res = await rewriter(EveryOther()).rewrite(make_request(rag_body(), path="/v1/embeddings"))
    assert isinstance(res, Skip) and res.reason == "path"


async def test_completions_prompt_is_compressed() -> None:
    body = {"model": "m", "prompt": rag_body()["messages"][1]["content"], "max_tokens": 5}
    res = await rewriter(EveryOther()).rewrite(make_request(body, path="/v1/completions"))
    assert isinstance(res, Rewrite)
    assert orjson.loads(res.body)["prompt"].endswith("Question: Who closed ticket INC-4803?")


async def test_unpaired_surrogate_leaves_the_body_unchanged() -> None:
    raw = rag_body()
    raw_json = json.dumps(raw).replace("Use the documents.", "Use the documents \\ud800.")
    parsed = json.loads(raw_json)  # the stdlib accepts a lone surrogate; orjson (the gateway's parser) does not
    res = await rewriter(EveryOther()).rewrite(make_request(parsed, raw=raw_json.encode()))
    assert isinstance(res, Skip) and res.reason == "encode"


async def test_special_tokens_and_emoji_survive_byte_identical() -> None:
    body = rag_body()
    body["messages"][1]["content"] = body["messages"][1]["content"].replace(
        "Document [4]: ", "Document [4]: <|endoftext|> [CLS] 😀👨\u200d👩\u200d👧 café ")
    res = await rewriter(EveryOther()).rewrite(make_request(body))
    assert isinstance(res, Rewrite)
    text = orjson.loads(res.body)["messages"][1]["content"]
    assert "<|endoftext|>" in text and "[CLS]" in text
    assert is_subsequence(units(text), units(body["messages"][1]["content"]))


async def test_a_compressor_that_invents_text_is_ignored() -> None:
    body = rag_body()
    res = await rewriter(EveryOther(garbage=True), ranker=None).rewrite(make_request(body))
    assert isinstance(res, Skip) and res.reason == "no_change"


async def test_fine_skips() -> None:
    # Not RAG-shaped: nothing else to do, the fine step's reason is the skip reason.
    body = {"model": "m", "messages": [{"role": "user", "content": FILL * 40 + "\n\nSummarise."}]}
    res = await rewriter(EveryOther(skip="saturated")).rewrite(make_request(body))
    assert isinstance(res, Skip) and res.reason == "fine_saturated"
    # RAG-shaped: the coarse step's result still goes out (no room for the floor: these siblings tie).
    res = await rewriter(EveryOther(skip="deadline"), coarse_floor_max_overshoot=0.0).rewrite(make_request(rag_body()))
    assert isinstance(res, Rewrite) and "fine=deadline" in res.headers[HEADER]


async def test_a_failing_compressor_never_raises() -> None:
    class Boom(EveryOther):
        async def compress(self, texts, rate, deadline_s):
            raise RuntimeError("model exploded")

    reg = CollectorRegistry()
    res = await rewriter(Boom(), registry=reg).rewrite(make_request(rag_body()))
    assert isinstance(res, Skip) and res.reason == "error"
    assert reg.get_sample_value("aigrid_compression_requests_total", {"outcome": "error"}) == 1


async def test_no_gain_when_the_body_would_not_shrink() -> None:
    class KeepAll(EveryOther):
        async def compress(self, texts, rate, deadline_s):
            return FineResult(tuple(texts), (1,) * len(texts), (1,) * len(texts), 0.0, 0.0)

    res = await rewriter(KeepAll(), ranker=None).rewrite(make_request(rag_body()))
    assert isinstance(res, Skip) and res.reason in ("no_change", "no_gain")


def test_model_rate_accounts_for_atoms() -> None:
    assert model_rate(0.5, 100, 0) == 0.5
    assert model_rate(0.5, 100, 20) == pytest.approx(30 / 80)
    assert model_rate(0.5, 100, 60) == 0.05
    assert model_rate(0.5, 10, 10) == 0.5


async def test_build_from_gateway_config_without_model() -> None:
    cfg = GatewayConfig(sites=[{"name": "edge", "endpoints": ["127.0.0.1:1"]}],
                        compression={"enabled": True, "ranker": "bm25", "fixed_rate": 0.4, "break_even": False, "min_prompt_tokens": 100, "deadline_ms": 30_000})
    rw = build_compression_rewriter(cfg, registry=CollectorRegistry())
    res = await rw.rewrite(make_request(rag_body()))
    assert isinstance(res, Rewrite)
    await rw.close()


@pytest.mark.slow
async def test_build_with_the_tiny_model(tiny_model_dir: Path) -> None:
    """The whole path with the model side's real worker on a tiny LLMLingua-2-shaped model."""
    cfg = GatewayConfig(sites=[{"name": "edge", "endpoints": ["127.0.0.1:1"]}],
                        compression={"enabled": True, "model_path": str(tiny_model_dir), "ranker": "bm25",
                                     "fixed_rate": 0.4, "break_even": False, "min_prompt_tokens": 100,
                                     "deadline_ms": 30_000})
    rw = build_compression_rewriter(cfg)
    try:
        for body in (rag_body(), {"model": "m", "messages": [{"role": "user", "content": "東京の拠点は負荷が高いので、大阪の拠点に要求を送ります。INC-4821は佐藤健一さんが起票しました。" * 30 + "\n\n要約してください。"}]}):
            res = await rw.rewrite(make_request(body))
            assert isinstance(res, Rewrite), res
            assert "fine=ok" in res.headers[HEADER]
            old = body["messages"][-1]["content"]
            new = orjson.loads(res.body)["messages"][-1]["content"]
            assert is_subsequence(units(new), units(old)) and len(new) < len(old)
        assert "INC-4821" in new and "佐藤健一さん" in new  # atoms and Japanese names stay whole
    finally:
        await rw.close()


@pytest.mark.parametrize("overshoot", [0.05, 0.2])
async def test_a_floor_decision_with_a_fine_step_stays_within_the_overshoot(overshoot: float) -> None:
    """The floor's rule holds with the model too: survivors of a floor decision are compressed to at most
    the rate plus the allowance, so the achieved rate (the header's `achieved`) never exceeds it by more
    than the model's own rounding (rates on a 0.05 grid, atoms kept on top)."""
    reg = CollectorRegistry()
    rw = rewriter(EveryOther(), registry=reg, coarse_floor_max_overshoot=overshoot, coarse_flat_margin=1.0)
    res = await rw.rewrite(make_request(rag_body(n_docs=8)))
    assert isinstance(res, Rewrite)
    h = res.headers[HEADER]
    requested = float(h.split(" rate=")[1].split()[0])
    achieved = float(h.split(" achieved=")[1].split()[0])
    assert "coarse=floor" in h and "fine=ok" in h, h
    assert achieved <= requested + overshoot + 0.05, h
    assert reg.get_sample_value("aigrid_compression_achieved_rate_count", {"floor": "bound"}) == 1
    await rw.close()
