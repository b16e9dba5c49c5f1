"""The stored copies of the corpus rankings (`shipped_rankings`): the package ships one for every
scenario under today's code, and a stored copy is used only when it is valid here."""

from __future__ import annotations

import gzip
import json

import pytest

from extproc.gateway.compression.rewriter import build_ranker
from extproc.gateway.config.compression import CompressionSettings
from extproc.tools.twin import gateway_adapter as ga
from extproc.tools.twin.arms import ARMS
from extproc.tools.twin.scenario import GRID_SCENARIOS, REFERENCE_SCENARIO, load_scenario
from extproc.tools.workload.rag import build_corpus
from extproc.tools.workload.spec import RagSpec


@pytest.mark.parametrize("path", [REFERENCE_SCENARIO, *GRID_SCENARIOS], ids=lambda p: p.stem)
def test_the_package_ships_a_ranking_of_every_scenarios_corpus(path):
    """A ranker, segmenter, corpus or model change renames the key: this fails until the copy is
    regenerated (`aigrid twin rank --shipped`), instead of every fresh machine ranking for minutes."""
    got = ga.ranking_inputs(load_scenario(path), ARMS["R+C"])
    assert got is not None
    corpus, settings = got
    name = f"{ga.rankings_key(corpus, settings, build_ranker(settings))}.json.gz"
    shipped = ga.SHIPPED_RANKINGS / name
    assert shipped.is_file(), f"no shipped ranking {name}: run `aigrid twin rank --shipped` and commit it"
    stored = ga._read_rankings(shipped)
    assert stored is not None
    wanted = {k for k, _, _ in ga._rag_item_keys(corpus, settings, corpus.items)}
    assert wanted and wanted <= stored[0].keys()


@pytest.fixture
def small(tmp_path, monkeypatch):
    """A small corpus ranked by BM25 (no model: fast), the user cache and the shipped copy in tmp."""
    monkeypatch.setenv("AIGRID_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(ga, "SHIPPED_RANKINGS", tmp_path / "shipped")
    ga._RANKINGS.clear()
    corpus = build_corpus(RagSpec(entities=8))
    settings = CompressionSettings.model_validate({"enabled": True, "ranker": "bm25"})
    yield corpus, settings, tmp_path
    ga._RANKINGS.clear()


def _rewrite(path, edit) -> None:  # type: ignore[no-untyped-def]
    doc = json.loads(gzip.decompress(path.read_bytes()))
    edit(doc)
    path.write_bytes(gzip.compress(json.dumps(doc).encode()))


def test_a_first_run_ranks_and_caches_and_a_second_reads_the_cache(small, monkeypatch):
    corpus, settings, tmp = small
    first = ga.shipped_rankings(corpus, settings)
    assert first and len(list((tmp / "cache" / "twin-rankings").glob("*.json.gz"))) == 1
    ga._RANKINGS.clear()
    monkeypatch.setattr(ga, "_rank_corpus", lambda *a: pytest.fail("ranked again with a valid cache"))
    assert ga.shipped_rankings(corpus, settings) == first


def test_the_shipped_copy_serves_a_fresh_machine(small, monkeypatch):
    corpus, settings, tmp = small
    path = ga.write_shipped_rankings(corpus, settings, tmp / "shipped")
    expected = ga._read_rankings(path)[0]  # type: ignore[index]
    monkeypatch.setattr(ga, "_rank_corpus", lambda *a: pytest.fail("ranked with a shipped copy on disk"))
    assert ga.shipped_rankings(corpus, settings) == expected


def test_a_copy_from_another_library_stack_is_used_only_when_a_sample_agrees(small, monkeypatch):
    corpus, settings, tmp = small
    path = ga.write_shipped_rankings(corpus, settings, tmp / "shipped")
    truth = ga._read_rankings(path)[0]  # type: ignore[index]
    ranked: list[int] = []
    real = ga._rank_corpus
    monkeypatch.setattr(ga, "_rank_corpus", lambda c, s, r, items: ranked.append(len(items)) or real(c, s, r, items))
    _rewrite(path, lambda d: d["stack"].update(torch="0.0.1"))
    assert ga.shipped_rankings(corpus, settings) == truth
    assert len(ranked) == 1 and 0 < ranked[0] < len(corpus.items)  # a sample only, and it agreed
    # Every score off by more than the tolerance: the sample disagrees, the whole corpus is ranked anew.
    ga._RANKINGS.clear()
    ranked.clear()
    _rewrite(path, lambda d: [r.update(scores=[s + 0.5 for s in r["scores"]]) for r in d["rankings"].values()])
    assert ga.shipped_rankings(corpus, settings) == truth
    assert ranked[-1] == len(corpus.items)


def test_a_copy_under_the_same_stack_that_misses_items_or_is_garbage_is_not_used(small):
    corpus, settings, tmp = small
    path = ga.write_shipped_rankings(corpus, settings, tmp / "shipped")
    truth = ga._read_rankings(path)[0]  # type: ignore[index]
    _rewrite(path, lambda d: d["rankings"].pop(next(iter(d["rankings"]))))
    assert ga.shipped_rankings(corpus, settings) == truth
    ga._RANKINGS.clear()
    (cache := tmp / "cache" / "twin-rankings").mkdir(parents=True, exist_ok=True)
    for f in cache.glob("*"):
        f.write_bytes(b"not gzip")
    path.write_bytes(b"\x1f\x8b truncated")
    assert ga.shipped_rankings(corpus, settings) == truth


def test_the_key_follows_the_settings_and_the_corpus(small):
    corpus, settings, _ = small
    key = ga.rankings_key(corpus, settings, build_ranker(settings))
    other = settings.model_copy(update={"min_segment_tokens": settings.min_segment_tokens + 1})
    assert ga.rankings_key(corpus, other, build_ranker(other)) != key
    assert ga.rankings_key(build_corpus(RagSpec(entities=9)), settings, build_ranker(settings)) != key
