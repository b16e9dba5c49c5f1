"""The prefix cache's block manager and its use by the engine: pure, exhaustive, no clock."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extproc.tools.sim.engine import FINISHED, EngineCore, SimRequest
from extproc.tools.sim.kvcache import ROOT_HASH, KVCacheManager, hash_blocks
from extproc.tools.sim.profiles import load_profiles, make_hardware

PROFILES = load_profiles()
BS = 16


# ---- the hash chain -------------------------------------------------------------------------------


def test_hash_chain_covers_full_blocks_only_and_depends_on_the_parent() -> None:
    toks = list(range(40))  # 2 full blocks + 8 tokens
    h = hash_blocks(toks, BS)
    assert len(h) == 2
    assert h[0] == hash((ROOT_HASH, *toks[:16]))
    assert h[1] == hash((h[0], *toks[16:32]))
    # Same second block after a different first block: different hash (the chain covers the prefix).
    other = [99] + toks[1:]
    h2 = hash_blocks(other, BS)
    assert h2[0] != h[0] and h2[1] != h[1]
    # A longer prompt with the same start shares the chain's head; a prompt under one block has none.
    assert hash_blocks(toks + list(range(100, 130)), BS)[:2] == h
    assert hash_blocks(toks[:15], BS) == []
    assert hash_blocks(toks[16:32], BS, parent=h[0]) == [h[1]]


# ---- the block manager ----------------------------------------------------------------------------


def test_counting_mode_without_caching() -> None:
    kv = KVCacheManager(10, BS, enable_caching=False)
    blocks: list[int] = []
    kv.allocate(blocks, 4)
    assert blocks == [] and kv.num_free == 6 and kv.usage == pytest.approx(0.4)
    assert kv.lookup([1, 2, 3], 100) == []
    kv.free(blocks, 4)
    assert kv.num_free == 10 and kv.num_cached_blocks == 0
    with pytest.raises(ValueError):
        kv.allocate(blocks, 11)


def test_allocate_takes_the_lru_head_and_free_returns_blocks_in_reverse() -> None:
    kv = KVCacheManager(6, BS)
    a: list[int] = []
    kv.allocate(a, 3)
    assert a == [0, 1, 2] and kv.free_order() == [3, 4, 5]
    kv.free(a, 3)
    # Reverse order: the request's last block is evicted first, its first block last.
    assert kv.free_order() == [3, 4, 5, 2, 1, 0]
    assert kv.num_free == 6 and kv.usage == 0.0


def test_a_freed_block_stays_a_hit_until_its_memory_is_reused() -> None:
    kv = KVCacheManager(4, BS)
    hashes = hash_blocks(list(range(48)), BS)  # 3 blocks
    a: list[int] = []
    kv.allocate(a, 3)
    kv.cache_blocks(a, hashes, 0, 3)
    kv.free(a, 3)
    assert kv.num_cached_blocks == 3 and kv.num_free == 4
    # 49 tokens: 3 full blocks may hit; with exactly 48 tokens only 2 may (the last token is recomputed).
    assert kv.lookup(hashes, 49) == a
    assert kv.lookup(hashes, 48) == a[:2]
    # Reuse memory: free order is [3, 2, 1, 0]; taking two blocks evicts block 2's hash (a[2]).
    b: list[int] = []
    kv.allocate(b, 2)
    assert b == [3, 2]
    assert kv.cached_block(hashes[2]) is None and kv.num_cached_blocks == 2
    assert kv.lookup(hashes, 49) == [0, 1]  # the chain stops at the first miss


def test_lookup_stops_at_the_first_miss_even_if_later_blocks_are_cached() -> None:
    kv = KVCacheManager(8, BS)
    hashes = hash_blocks(list(range(64)), BS)
    a: list[int] = []
    kv.allocate(a, 4)
    kv.cache_blocks(a, hashes, 0, 4)
    kv.free(a, 4)
    other = hash_blocks([7] * 16 + list(range(16, 64)), BS)
    assert kv.lookup(other, 100) == []  # first block differs: nothing, though tokens 16.. are equal


def test_refcounts_shared_blocks_leave_the_free_queue_and_return_when_the_last_holder_frees() -> None:
    kv = KVCacheManager(8, BS)
    hashes = hash_blocks(list(range(32)), BS)
    a: list[int] = []
    kv.allocate(a, 2)
    kv.cache_blocks(a, hashes, 0, 2)
    hit = kv.lookup(hashes, 40)
    assert hit == a
    assert kv.can_admit(hit, 1)
    kv.touch(hit)  # a second request shares both blocks while the first still holds them
    assert kv.ref_count(a[0]) == 2 and kv.num_free == 6
    kv.free(a, 2)
    assert kv.ref_count(a[0]) == 1 and kv.num_free == 6 and a[0] not in kv.free_order()
    kv.free(hit, 2)
    assert kv.ref_count(a[0]) == 0 and kv.num_free == 8 and kv.free_order()[-2:] == [a[1], a[0]]


def test_admission_counts_evictable_hit_blocks_against_free_space() -> None:
    kv = KVCacheManager(4, BS)
    hashes = hash_blocks(list(range(48)), BS)
    a: list[int] = []
    kv.allocate(a, 3)
    kv.cache_blocks(a, hashes, 0, 3)
    kv.free(a, 3)
    hit = kv.lookup(hashes, 49)  # 3 free cached blocks
    assert len(hit) == 3
    assert kv.can_admit(hit, 1)  # 3 evictable + 1 new = 4 free
    assert not kv.can_admit(hit, 2)
    kv.touch(hit)
    assert kv.num_free == 1 and kv.usage == pytest.approx(0.75)


def test_duplicate_hash_keeps_the_first_block() -> None:
    kv = KVCacheManager(4, BS)
    hashes = hash_blocks(list(range(16)), BS)
    a: list[int] = []
    b: list[int] = []
    kv.allocate(a, 1)
    kv.allocate(b, 1)
    kv.cache_blocks(a, hashes, 0, 1)
    kv.cache_blocks(b, hashes, 0, 1)  # computed the same prefix at the same time
    assert kv.cached_block(hashes[0]) == a[0]
    kv.free(b, 1)
    kv.free(a, 1)
    # Reusing b's memory does not evict a's hash.
    c: list[int] = []
    kv.allocate(c, 3)
    assert kv.cached_block(hashes[0]) == a[0] and b[0] in c


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(1, 90), st.booleans()), min_size=1, max_size=60))
def test_random_workload_keeps_refcounts_free_queue_and_cache_consistent(ops) -> None:
    """Any sequence of admit/free keeps: free == blocks with ref 0 == free queue; cached ids valid."""
    kv = KVCacheManager(24, BS)
    held: list[list[int]] = []
    for prefix, length, release in ops:
        toks = [prefix] * 16 + list(range(length))  # a few shared first blocks
        hashes = hash_blocks(toks, BS)
        hit = kv.lookup(hashes, len(toks))
        need = -(-len(toks) // BS) - len(hit)
        if kv.can_admit(hit, need):
            kv.touch(hit)
            blocks = list(hit)
            kv.allocate(blocks, need)
            kv.cache_blocks(blocks, hashes, len(hit), len(hashes))
            held.append(blocks)
        if release and held:
            blocks = held.pop(0)
            kv.free(blocks, len(blocks))
        refs = [kv.ref_count(b) for b in range(24)]
        assert kv.num_free == refs.count(0) == len(kv.free_order())
        assert set(kv.free_order()) == {b for b in range(24) if refs[b] == 0}
        assert sum(len(h) for h in held) == sum(refs)
        assert kv.usage == pytest.approx((24 - kv.num_free) / 24)


@settings(max_examples=80, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 120), st.integers(0, 3), st.booleans()), min_size=1,
                max_size=80))
def test_bulk_operations_match_the_one_block_at_a_time_manager(ops) -> None:
    """The engine's manager (bulk operations over whole block lists, never-used blocks kept as a range)
    against the one it replaced (tests/sim/reference_kvcache.py), operation for operation: the same block
    ids, free queue order, reference counts, cache entries and lookups — with sharing, eviction, duplicate
    hashes computed at once, and the queue running dry."""
    import reference_kvcache

    new, old = KVCacheManager(40, BS), reference_kvcache.KVCacheManager(40, BS)
    held: list[tuple[list[int], list[int]]] = []
    for prefix, length, twin, release in ops:
        toks = [prefix] * 32 + list(range(length))
        hashes = hash_blocks(toks, BS)
        hit_n, hit_o = new.lookup(hashes, len(toks)), old.lookup(hashes, len(toks))
        assert hit_n == hit_o
        need = -(-len(toks) // BS) - len(hit_n)
        assert new.can_admit(hit_n, need) == old.can_admit(hit_o, need)
        for k in range(1 + (twin == 0)):  # sometimes a second request computes the same prompt at once
            fits = old.can_admit(hit_o, need)
            if k == 0 and twin % 2:
                assert new.take(hit_n, need) == fits  # can_admit + touch in one pass, as the engine admits
            elif fits:
                new.touch(hit_n)
            if fits:
                old.touch(hit_o)
                bn, bo = list(hit_n), list(hit_o)
                new.allocate(bn, need)
                old.allocate(bo, need)
                assert bn == bo
                full = min(len(hashes), twin * 3 + len(hit_n))  # register part, all, or none of the prompt
                assert new.cache_blocks(bn, hashes, len(hit_n), full) == old.cache_blocks(bo, hashes, len(hit_o), full)
                held.append((bn, bo))
        if release and held:
            bn, bo = held.pop(twin % len(held))
            new.free(bn, len(bn))
            old.free(bo, len(bo))
        assert new.free_order() == old.free_order()
        assert new.num_free == old.num_free and new.num_cached_blocks == old.num_cached_blocks
        assert [new.ref_count(b) for b in range(40)] == [old.ref_count(b) for b in range(40)]
        assert new._cached == old._cached and new._hash == old._hash
    with pytest.raises(ValueError):
        new.allocate([], new.num_free + 1)


# ---- the engine with prefix caching ---------------------------------------------------------------


def _hw(**kw):
    return make_hardware(PROFILES, "H100", "llama-3.1-8b", 1, **kw)


def _req(rid: str, toks: list[int], out: int = 4) -> SimRequest:
    return SimRequest(rid, len(toks), out, 0.0, block_hashes=hash_blocks(toks, BS))


def _run(core: EngineCore, t: float = 0.0) -> float:
    while core.has_work:
        plan = core.schedule(t)
        t += plan.duration
        core.commit(plan, t)
    return t


def test_engine_second_identical_prompt_skips_the_cached_blocks() -> None:
    core = EngineCore(_hw())
    toks = list(range(1000))  # 62 full blocks + 8 tokens
    a = _req("a", toks)
    core.add(a)
    plan = core.schedule(0.0)
    assert plan.num_prefill_tokens == 1000
    _run(core)
    assert a.num_cached_tokens == 0
    b = _req("b", toks)
    core.add(b)
    plan = core.schedule(1.0)
    assert b.num_cached_tokens == 62 * 16 and plan.num_prefill_tokens == 1000 - 992
    # The cached context is still read by attention: KV read and attention cover the whole prompt.
    assert plan.kv_read_tokens == 992
    assert plan.attn_ctx_sum == 8 * 992 + 8 * 9 // 2
    _run(core, 1.0)
    st = core.stats
    assert st.prefix_cache_queries == 2000 and st.prefix_cache_hits == 992
    assert st.prompt_tokens == 2000  # vLLM counts every prompt token, cached or not
    assert b.status == FINISHED and core.free_blocks == core.total_blocks


def test_engine_block_aligned_prompt_recomputes_its_last_block() -> None:
    core = EngineCore(_hw())
    toks = list(range(64))
    core.add(_req("a", toks))
    _run(core)
    b = _req("b", toks)
    core.add(b)
    plan = core.schedule(1.0)
    assert b.num_cached_tokens == 48 and plan.num_prefill_tokens == 16


def test_engine_shared_prefix_hits_only_the_common_full_blocks() -> None:
    core = EngineCore(_hw())
    docs = list(range(500))  # 31 full blocks + 4
    core.add(_req("a", docs + [7001, 7002, 7003]))
    _run(core)
    b = _req("b", docs + [8001, 8002])
    core.add(b)
    core.schedule(1.0)
    assert b.num_cached_tokens == 31 * 16  # the partial block holding the questions' start is not cached


def test_engine_concurrent_sharers_hold_blocks_once_in_kv_usage() -> None:
    core = EngineCore(_hw())
    toks = list(range(3200))  # 200 blocks
    a = _req("a", toks, out=50)
    core.add(a)
    core.commit(core.schedule(0.0), 0.1)  # a computed and registered its prompt
    assert core.total_blocks - core.free_blocks == 200
    b = _req("b", toks, out=50)
    core.add(b)
    core.schedule(0.1)
    # b shares a's first 199 blocks and allocates its own copy of the last one (recomputed token);
    # a, decoding its 3201st token, opens block 201: 202 blocks held, not 2 x 200.
    assert b.num_cached_tokens == 199 * 16
    assert a.num_blocks == 201 and b.num_blocks == 200
    assert core.total_blocks - core.free_blocks == 202
    assert core.kv.ref_count(a.block_ids[0]) == 2


def test_engine_preempted_request_gets_its_own_blocks_back_from_the_cache() -> None:
    h = make_hardware(PROFILES, "L4", "llama-3.1-8b", 1, max_model_len=8192)
    core = EngineCore(h)
    rng = random.Random(3)
    reqs = []
    for i in range(h.kv_capacity_tokens // 3000 + 2):
        toks = [rng.randrange(100_000) for _ in range(3000)]
        r = _req(f"r{i}", toks, out=1200)  # admitted prompts fill the cache; their answers cannot grow
        reqs.append(r)
        core.add(r)
    _run(core)
    assert core.stats.preemptions > 0
    assert all(r.status == FINISHED for r in reqs)
    # Recomputation after preemption found the victim's own prompt blocks still cached.
    assert core.stats.prefix_cache_hits > 0
    assert all(r.num_cached_tokens == 0 for r in reqs)  # first admissions had nothing to hit
    assert core.free_blocks == core.total_blocks


def test_engine_prefix_caching_off_ignores_hashes() -> None:
    core = EngineCore(_hw(), prefix_caching=False)
    toks = list(range(1000))
    core.add(_req("a", toks))
    _run(core)
    b = _req("b", toks)
    core.add(b)
    assert core.schedule(1.0).num_prefill_tokens == 1000
    assert core.stats.prefix_cache_queries == 0 and b.num_cached_tokens == 0
    off = EngineCore(_hw(enable_prefix_caching=False))
    assert not off.prefix_caching


def test_engine_rejects_more_hashes_than_full_blocks() -> None:
    core = EngineCore(_hw())
    with pytest.raises(ValueError, match="block_hashes"):
        core.add(SimRequest("x", 20, 2, 0.0, block_hashes=[1, 2]))


def test_engine_eviction_under_pressure_keeps_accounting_exact() -> None:
    h = make_hardware(PROFILES, "L4", "llama-3.1-8b", 1, max_model_len=4096)
    core = EngineCore(h)
    rng = random.Random(11)
    prefixes = [[rng.randrange(100_000) for _ in range(1024)] for _ in range(6)]
    t = 0.0
    for i in range(120):
        toks = prefixes[rng.randrange(6)] + [rng.randrange(100_000) for _ in range(rng.randint(1, 900))]
        core.add(_req(f"r{i}", toks, out=rng.randint(1, 64)))
        for _ in range(3):
            if core.has_work:
                plan = core.schedule(t)
                t += plan.duration
                core.commit(plan, t)
                held = sum(1 for b in range(core.total_blocks) if core.kv.ref_count(b) > 0)
                assert held == core.total_blocks - core.free_blocks
    _run(core, t)
    st = core.stats
    assert 0 < st.prefix_cache_hits < st.prefix_cache_queries
    assert core.free_blocks == core.total_blocks
