"""Prefix-cache-aware, deterministic rewriting (cache.py, CompressionPipeline.replay/remember).

Rule under test: only the newest turn is compressed; earlier turns go exactly as they were sent the first
time (remembered by content hash), and the same content always compresses to the same bytes, even with a
compressor that is not deterministic itself (int8 batches, a saturated worker)."""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

sys.path.insert(0, str(Path(__file__).parent))

from fakes import RandomKeep, make_request  # noqa: E402

from extproc.gateway.compression.core.cache import BoundedLRU, DocumentCache, TurnMemory, digest, quantize_rate  # noqa: E402
from extproc.gateway.compression.core.coarse import CoarseRanker  # noqa: E402
from extproc.gateway.compression.rewriter import HEADER, CompressionRewriter  # noqa: E402
from extproc.gateway.compression.core.segment import is_subsequence, units  # noqa: E402
from extproc.gateway.config.compression import CompressionSettings  # noqa: E402
from extproc.gateway.compression.seam import Rewrite  # noqa: E402

FILL = ("The quarterly review covered staffing, the new warehouse lease and the migration of the ticketing "
        "system to a managed service, which the operations team expects to finish before the summer. ")


def _settings(**kw) -> CompressionSettings:
    base = dict(enabled=True, min_prompt_tokens=50, fixed_rate=0.5, break_even=False, deadline_ms=30_000)
    base.update(kw)
    return CompressionSettings(**base)


def _rw(fine, **kw) -> CompressionRewriter:
    s = _settings(**kw)
    return CompressionRewriter(s, fine=fine, ranker=CoarseRanker("bm25") if s.coarse else None)


def _doc(i: int, reps: int = 3) -> str:
    return f"Document [{i}]: Ticket INC-{4800 + i} was closed by agent number {i} on Friday. " + FILL * reps


def _rag(docs: list[str], question: str) -> dict:
    return {"model": "m", "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Use the documents.\n\n" + "\n\n".join(docs) + "\n\nQuestion: " + question},
    ]}


# ---- pure parts ----------------------------------------------------------------------------------------------
def test_quantize_rate() -> None:
    assert quantize_rate(0.33) == 0.35 and quantize_rate(0.32) == 0.3 and quantize_rate(0.5) == 0.5
    assert quantize_rate(0.001) == 0.05 and quantize_rate(1.2) == 1.0
    assert quantize_rate(0.476) == quantize_rate(0.52) == 0.5  # nearby loads, same bytes


def test_digest_is_length_prefixed() -> None:
    assert digest("ab", "c") != digest("a", "bc") and digest("x") == digest("x")


def test_bounded_lru() -> None:
    c: BoundedLRU[str] = BoundedLRU(max_entries=2, max_chars=10)
    c.put("a", "1", 4)
    c.put("b", "2", 4)
    assert c.get("a") == "1"  # a is now the most recent
    c.put("c", "3", 4)  # over 10 chars: the least recent (b) goes
    assert c.get("b") is None and c.get("a") == "1" and c.get("c") == "3" and c.chars == 8
    c.put("huge", "x", 11)  # larger than the cache: not stored, nothing evicted
    assert c.get("huge") is None and len(c) == 2
    assert (c.hits, c.misses) == (3, 2)


def test_document_cache_and_turn_memory() -> None:
    d = DocumentCache()
    d.put("text", 0.5, "t")
    assert d.get("text", 0.5) == "t" and d.get("text", 0.55) is None and d.get("other", 0.5) is None
    m = TurnMemory()
    m.put("orig", "sent")
    assert m.get("orig") == "sent" and m.get("orig2") is None and len(m) == 1


# ---- the same input, the same bytes -----------------------------------------------------------------------------
async def test_same_request_same_bytes_with_a_nondeterministic_compressor() -> None:
    body = _rag([_doc(i) for i in range(4)], "Who closed ticket INC-4802?")
    rw = _rw(RandomKeep(), coarse=False)
    a, b = await rw.rewrite(make_request(body)), await rw.rewrite(make_request(body))
    assert isinstance(a, Rewrite) and isinstance(b, Rewrite)
    assert a.body == b.body
    assert len(rw.pipeline.fine.calls) == 1  # the second request was served from the document cache
    # The check can fail: without the cache the same compressor gives other bytes.
    rw0 = _rw(RandomKeep(), coarse=False, cache_max_documents=0, cache_max_chars=0)
    a0, b0 = await rw0.rewrite(make_request(body)), await rw0.rewrite(make_request(body))
    assert a0.body != b0.body


async def test_same_bytes_when_the_worker_is_saturated_the_second_time() -> None:
    body = _rag([_doc(i) for i in range(4)], "Who closed ticket INC-4802?")
    fine = RandomKeep()
    rw = _rw(fine, coarse=False)
    a = await rw.rewrite(make_request(body))
    fine.skip = "saturated"  # a busy worker: the pieces it compressed before are still at hand
    b = await rw.rewrite(make_request(body))
    assert isinstance(b, Rewrite) and a.body == b.body


async def test_a_shared_document_is_the_same_bytes_across_requests() -> None:
    shared = _doc(1, reps=4)
    r1 = _rag([shared, _doc(2), _doc(3)], "Who closed ticket INC-4801?")
    r2 = _rag([shared, _doc(7), _doc(8), _doc(9)], "What happened on Friday to INC-4801?")
    rw = _rw(RandomKeep(), coarse=False)
    out = []
    for body in (r1, r2):
        res = await rw.rewrite(make_request(body))
        assert isinstance(res, Rewrite)
        out.append(orjson.loads(res.body)["messages"][1]["content"])
    first = [t.split("\n\nDocument [")[0] for t in out]  # instruction + the shared document, compressed
    assert first[0] == first[1] and len(first[0]) < len("Use the documents.\n\n" + shared)
    # ... so the prompt prefix the site sees (system, then this) is identical in both requests.
    assert is_subsequence(units(first[0]), units("Use the documents.\n\n" + shared))


# ---- earlier turns -------------------------------------------------------------------------------------------
def _render(messages: list[dict]) -> str:
    """A chat template's view of the prompt: what a prefix cache compares."""
    return "".join(f"<|{m['role']}|>{m.get('content') or ''}" for m in messages)


async def test_multi_turn_conversation_keeps_its_prefix() -> None:
    turn1 = _rag([_doc(i) for i in range(5)], "Who closed ticket INC-4803?")
    rw = _rw(RandomKeep(), fixed_rate=None)  # the load curve decides (pressure 0.95 here: the floor, 0.5)
    r1 = await rw.rewrite(make_request(turn1))
    assert isinstance(r1, Rewrite)
    sent1 = orjson.loads(r1.body)["messages"]
    assert sent1[1]["content"] != turn1["messages"][1]["content"]  # compressed
    # The client's next request repeats turn 1 as IT wrote it, plus the answer and a new question.
    turn2 = {"model": "m", "messages": [*turn1["messages"], {"role": "assistant", "content": "Agent 3."},
                                        {"role": "user", "content": "And INC-4804? " + _doc(9)}]}
    r2 = await rw.rewrite(make_request(turn2))
    assert isinstance(r2, Rewrite)
    sent2 = orjson.loads(r2.body)["messages"]
    assert sent2[:2] == sent1  # turn 1 goes as it was sent the first time...
    assert _render(sent2).startswith(_render(sent1))  # ... so the site's cached prefix still matches
    assert "replayed=1" in r2.headers[HEADER]
    # Idle now (the policy would not compress): earlier turns are still sent as before.
    r3 = await rw.rewrite(make_request(turn2, pressure=0.0))
    assert isinstance(r3, Rewrite) and "skip=idle" in r3.headers[HEADER] and "replayed=1" in r3.headers[HEADER]
    assert orjson.loads(r3.body)["messages"][:2] == sent1
    # A short follow-up with nothing to compress: the same.
    turn3 = {"model": "m", "messages": [*turn1["messages"], {"role": "assistant", "content": "Agent 3."},
                                        {"role": "user", "content": "Thanks!"}]}
    r4 = await rw.rewrite(make_request(turn3))
    assert isinstance(r4, Rewrite) and "skip=nothing_to_compress" in r4.headers[HEADER]
    assert orjson.loads(r4.body)["messages"][:2] == sent1
    assert rw.metrics.registry.get_sample_value("aigrid_compression_turns_replayed_total") == 3


async def test_an_earlier_turn_never_compressed_goes_as_written() -> None:
    turn1 = _rag([_doc(i) for i in range(5)], "Who closed ticket INC-4803?")
    turn2 = {"model": "m", "messages": [*turn1["messages"], {"role": "assistant", "content": "Agent 3."},
                                        {"role": "user", "content": "And INC-4804? " + _doc(9) + " " + _doc(10)}]}
    rw = _rw(RandomKeep())  # a fresh gateway: it never saw turn 1 (another replica, or a restart)
    res = await rw.rewrite(make_request(turn2))
    sent = orjson.loads(res.body)["messages"] if isinstance(res, Rewrite) else turn2["messages"]
    assert sent[:3] == turn2["messages"][:3]  # the earlier turn is not rewritten anew
    assert sent[3] != turn2["messages"][3]  # only the newest turn is compressed


@pytest.mark.parametrize("rewrite_earlier", [False, True])
async def test_earlier_turns_setting(rewrite_earlier: bool) -> None:
    turn1 = _rag([_doc(i) for i in range(5)], "Who closed ticket INC-4803?")
    turn2 = {"model": "m", "messages": [*turn1["messages"], {"role": "assistant", "content": "Agent 3."},
                                        {"role": "user", "content": "Thanks!"}]}
    rw = _rw(RandomKeep(), rewrite_earlier_turns=rewrite_earlier)
    res = await rw.rewrite(make_request(turn2))
    changed = isinstance(res, Rewrite) and orjson.loads(res.body)["messages"][1] != turn2["messages"][1]
    assert changed == rewrite_earlier
