"""The compression pipeline, pure but for the model and the ranker it is handed: segment → rate →
coarse (question-aware document choice) → fine (LLMLingua-2 keep decisions) → restore + rebuild.

`CompressionPipeline.compress` runs the steps at a given rate (the eval command and the twin call it
directly); `extproc.gateway.compression.rewriter.CompressionRewriter` is the gateway's adapter around it (load
policy, deadline, encoding, metrics, headers).
"""


from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from extproc.gateway.compression.core.cache import (
    DocumentCache,
    RankingCache,
    TurnMemory,
    quantize_rate,
)
from extproc.gateway.compression.core.coarse import (
    CoarseRanker,
    Ranking,
    choose_documents,
    coarse_budget,
)
from extproc.gateway.compression.core.fine import FineCompressor, FineResult, Skipped
from extproc.gateway.compression.core.segment import (
    PROTECT_OPEN,
    Piece,
    Segmentation,
    SegmentOptions,
    rebuild,
    restore,
    script_of,
    segment,
    unit_spans,
    units,
    with_atoms,
)
from extproc.gateway.config.compression import CompressionSettings
from extproc.gateway.request.openai import estimate_tokens

log = logging.getLogger(__name__)

# Bodies above this are segmented and rebuilt in a thread: regex work over a megabyte would otherwise
# hold the gRPC loop for tens of milliseconds.
THREAD_BODY_BYTES = 64 * 1024
# A dropped whole-message document (a tool output, an earlier user message) keeps this many leading
# units: removing the message would break tool_call pairing or role alternation.
STUB_UNITS = 8
# The coarse step fills unspent budget with the head of the best dropped document only when at least this
# much fits (a few words of a document help no one).
MIN_FILL_TOKENS = 16
MIN_FILL_UNITS = 8
# Below this the fine step is not worth a model call.
MIN_FINE_RATE_GAIN = 0.02


# ---- pipeline -----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class Outcome:
    """What one compression pass did. `body` is None when nothing changed."""

    body: dict[str, Any] | None
    reason: str
    tokens_before: int
    tokens_after: int
    doc_tokens_before: int = 0
    docs_before: int = 0
    kept_docs: list[int] = field(default_factory=list)
    rate: float = 1.0
    fine_rate: float | None = None
    fine: str = "none"
    ranker: str = ""
    coarse_s: float = 0.0
    fine_s: float = 0.0
    # Compressible tokens before and after (what the rate applies to).
    comp_before: int = 0
    comp_after: int = 0
    # Each document's text after compression ("" when dropped, the stub for a whole-message document).
    doc_texts_after: list[str] = field(default_factory=list)
    # What bounded the coarse step: "rate" (the budget), "floor" (flat ranking: kept more), "" (none ran).
    coarse_decision: str = ""
    # Dropped documents whose head was brought back to fill the budget (not counted in kept_docs).
    cut_docs: list[int] = field(default_factory=list)
    # Earlier-turn messages sent as they were sent the first time (prefix cache).
    replayed: int = 0


def _atom_units(piece: Piece) -> int:
    return sum(len(units(piece.text[a:b])) for a, b in piece.atoms)


def model_rate(rate: float, n_units: int, atom_units: int) -> float:
    """The rate to ask of the model so that, with every atom kept on top of what it keeps, about `rate`
    of the units survive."""
    if n_units <= atom_units or n_units == 0:
        return rate
    r = (rate * n_units - atom_units) / (n_units - atom_units)
    return min(1.0, max(0.05, r))


_TAGS_ONLY = re.compile(r"\s*(?:</?[A-Za-z][^<>]*>\s*)+")


def _droppable(seg: Segmentation, di: int) -> bool:
    """A document may be dropped whole only if nothing in it (but its header and its markup tags, e.g.
    </document>) is protected: protected text reaches the model byte-identical, always."""
    d = seg.documents[di]
    slot = seg.slots[d.slot]
    for pi in d.pieces:
        p = slot.pieces[pi]
        if PROTECT_OPEN in p.text:
            return False
        if p.compress or p.header or not p.text.strip() or (not d.whole_message and _TAGS_ONLY.fullmatch(p.text)):
            continue
        return False
    return True


def _drop(seg: Segmentation, di: int, out: dict[tuple[int, int], str]) -> None:
    d = seg.documents[di]
    slot = seg.slots[d.slot]
    stubbed = False
    for pi in d.pieces:
        p = slot.pieces[pi]
        if d.whole_message and not stubbed and p.compress:
            out[(d.slot, pi)] = restore(p.text, None, keep_units=STUB_UNITS) or p.text
            stubbed = True
        elif not d.whole_message or p.compress:
            out[(d.slot, pi)] = ""


def _stub_tokens(seg: Segmentation, di: int) -> int:
    """Tokens a dropped document still costs: its stub if it is a whole message, else nothing."""
    d = seg.documents[di]
    if not d.whole_message or not _droppable(seg, di):
        return 0
    slot = seg.slots[d.slot]
    for pi in d.pieces:
        if slot.pieces[pi].compress:
            return estimate_tokens(restore(slot.pieces[pi].text, None, keep_units=STUB_UNITS) or "")
    return 0


def _fill(seg: Segmentation, di: int, room: int, out: dict[tuple[int, int], str]) -> bool:
    """Bring back the head of dropped document `di` (its marker and tags as they were, then the first
    units of its text) in about `room` tokens; for a whole-message document the head replaces its stub
    (`room` then includes what the stub cost). False (and no change) when not even a few units fit."""
    d = seg.documents[di]
    slot = seg.slots[d.slot]
    fixed = sum(estimate_tokens(slot.pieces[pi].text) for pi in d.pieces if not slot.pieces[pi].compress)
    left = room - fixed
    new: dict[tuple[int, int], str] = {}
    for pi in d.pieces:
        p = slot.pieces[pi]
        if not p.compress:
            new[(d.slot, pi)] = p.text
            continue
        if left <= 0:
            new[(d.slot, pi)] = ""
            continue
        # A token is at least one character: only the first 8 x left characters can matter.
        head = p.text[: max(0, left) * 8]
        spans = unit_spans(head)
        lo, hi = 0, len(spans)  # the most units whose text fits in `left` tokens
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if estimate_tokens(head[: spans[mid - 1][1]]) <= left:
                lo = mid
            else:
                hi = mid - 1
        text = (restore(p.text, None, keep_units=lo) or "") if lo else ""
        new[(d.slot, pi)] = text
        left -= estimate_tokens(text)
    if sum(len(units(t)) for k, t in new.items() if slot.pieces[k[1]].compress) < MIN_FILL_UNITS:
        return False
    out.update(new)
    return True


def _prepare(pieces: list[Piece]) -> list[Piece]:
    """The pieces bound for the model, with their atoms; Japanese pieces also get their names as atoms
    (proper nouns, and kana names the dictionary does not know: kept whole) and their morphemes as groups
    (a kept span never splits one). Name detection is best effort: without fugashi, or on any analyser error, a piece
    keeps its regex atoms only."""
    out = []
    for p in pieces:
        p = with_atoms(p)
        if script_of(p.text) == "ja":
            try:
                from extproc.gateway.compression.core.coarse import (  # noqa: PLC0415
                    morpheme_spans_of,
                    proper_noun_spans,
                    unknown_name_spans,
                )

                names = (*proper_noun_spans(p.text), *unknown_name_spans(p.text))
                p = Piece(p.text, p.compress, p.doc, tuple(sorted((*p.atoms, *names))), p.header,
                          tuple(morpheme_spans_of(p.text)))
            except Exception:
                log.warning("japanese name detection failed; compressing without it", exc_info=True)
        out.append(p)
    return out


async def _fine_call(fine: FineCompressor, texts: list[str], rate: float, remaining: float) -> FineResult | Skipped:
    try:
        return await fine.compress(texts, rate, remaining)
    except asyncio.TimeoutError:
        return Skipped("deadline")


def _restore_all(pieces: list[Piece], kept: tuple[str, ...]) -> list[str | None]:
    return [restore(p.text, k, p.atoms, groups=p.groups) for p, k in zip(pieces, kept)]


class CompressionPipeline:
    def __init__(
        self,
        settings: CompressionSettings,
        fine: FineCompressor | None = None,
        ranker: CoarseRanker | None = None,
    ) -> None:
        self.settings = settings
        self.fine = fine
        self.ranker = ranker
        self.seg_opts = SegmentOptions(
            min_segment_tokens=settings.min_segment_tokens, rewrite_earlier_turns=settings.rewrite_earlier_turns
        )
        # Same content, same bytes (see cache.py): compressed pieces and rankings by content hash.
        self.doc_cache = DocumentCache(settings.cache_max_documents, settings.cache_max_chars)
        self.rank_cache: RankingCache[Ranking] = RankingCache(settings.cache_max_rankings)
        self.turns = TurnMemory(settings.cache_max_documents, settings.cache_max_chars)

    # -- earlier turns: send them as they were sent the first time -----------------------------------------
    def replay(self, seg: Segmentation) -> dict[tuple[int, int], str]:
        """Replacements that put back, for each earlier-turn message we rewrote when it was the newest
        turn, exactly the bytes sent then (the site's prefix cache holds those). Cheap: a hash lookup."""
        out: dict[tuple[int, int], str] = {}
        for si in seg.earlier_slots:
            slot = seg.slots[si]
            sent = self.turns.get(slot.text)
            if sent is not None and sent != slot.text:
                out[(si, 0)] = sent
                for pi in range(1, len(slot.pieces)):
                    out[(si, pi)] = ""
        return out

    def remember(self, seg: Segmentation, repl: Mapping[tuple[int, int], str]) -> None:
        earlier = set(seg.earlier_slots)
        for si in sorted({si for si, _ in repl} - earlier):
            slot = seg.slots[si]
            new = "".join(repl.get((si, pi), p.text) for pi, p in enumerate(slot.pieces))
            if new != slot.text:
                self.turns.put(slot.text, new)

    def segment(self, path: str, body: Mapping[str, Any]) -> Segmentation:
        return segment(path, body, self.seg_opts)

    async def compress(
        self,
        path: str,
        body: Mapping[str, Any],
        rate: float,
        deadline_s: float,
        seg: Segmentation | None = None,
        use_fine: bool = True,
    ) -> Outcome:
        t_end = time.monotonic() + deadline_s
        if seg is None:
            seg = self.segment(path, body)
        out = Outcome(None, "unchanged", seg.total_tokens, seg.total_tokens, rate=rate)
        out.comp_before = out.comp_after = seg.compressible_tokens
        out.docs_before = len(seg.documents)
        out.doc_tokens_before = sum(d.tokens for d in seg.documents)
        out.kept_docs = list(range(len(seg.documents)))
        replayed = self.replay(seg)
        if seg.compressible_tokens == 0:
            out.reason = "nothing_to_compress"
            if replayed:
                out.body = rebuild(body, seg, replayed)
                out.replayed = sum(1 for _, pi in replayed if pi == 0)
            return out
        repl: dict[tuple[int, int], str] = dict(replayed)
        out.replayed = sum(1 for si, pi in replayed if pi == 0)
        dropped: set[int] = set()

        # -- coarse: drop the documents least relevant to the question
        fine = self.fine if use_fine else None
        if self.ranker is not None and self.settings.coarse and seg.rag:
            t0 = time.monotonic()
            doc_texts = [d.text for d in seg.documents]
            ranking = self.rank_cache.get(seg.question, doc_texts)
            if ranking is None:
                try:
                    ranking = await self.ranker.rank(seg.question, doc_texts, max(0.0, t_end - time.monotonic()))
                    # The first ranking of this content is the one used from now on (whether the embedding
                    # made it in time or not): the same request always drops the same documents.
                    self.rank_cache.put(seg.question, doc_texts, ranking)
                except asyncio.TimeoutError:
                    ranking = None
                    out.ranker = "timeout"
            out.coarse_s = time.monotonic() - t0
            if ranking is not None:
                out.ranker = ranking.method
                tokens = [d.tokens for d in seg.documents]
                budget = coarse_budget(
                    out.doc_tokens_before, rate, fine is not None, self.settings.coarse_slack
                )
                final = ranking.final_scores()
                # A dropped whole-message document stays as a stub, which the budget must pay for. Kept set
                # K costs sum(t_i, K) + sum(s_i, not K) = sum(s_i) + sum(t_i - s_i, K): choosing with
                # t_i - s_i against the budget less every stub is exact, whatever is kept.
                stub = [_stub_tokens(seg, di) for di in range(len(tokens))]
                if any(stub):
                    tokens = [max(0, t - s) for t, s in zip(tokens, stub)]
                    budget = max(0, budget - sum(stub))
                # The floor's allowance: at most `coarse_floor_max_overshoot` of the compressible tokens
                # beyond what the rate asks (the achieved rate is compressible after / before).
                allowance = int(self.settings.coarse_floor_max_overshoot * seg.compressible_tokens)
                sel = choose_documents(final, tokens, budget, self.settings.coarse_min_docs,
                                       self.settings.coarse_flat_margin, allowance)
                keep = set(sel.kept)
                for di in range(len(seg.documents)):
                    if di not in keep and _droppable(seg, di):
                        dropped.add(di)
                        _drop(seg, di, repl)
                if fine is None and sel.decision == "rate":
                    # Coarse only: whole documents leave the budget partly unspent; the best dropped one
                    # fills it with its head, so the rate is met, not undershot by up to a document.
                    room = budget - sum(tokens[i] for i in range(len(tokens)) if i not in dropped)
                    order = sorted(dropped, key=lambda i: (-final[i], i))
                    # Only a document the ranker found relevant at all (an unrelated 1 MB log is not).
                    if order and final[order[0]] > 0 and room >= MIN_FILL_TOKENS and _fill(
                        seg, order[0], room + stub[order[0]], repl
                    ):
                        out.cut_docs = [order[0]]
                out.kept_docs = [i for i in range(len(seg.documents)) if i not in dropped]
                out.coarse_decision = sel.decision

        # -- fine: the model on what is left
        targets = [(si, pi) for si, pi in seg.compressible() if (si, pi) not in repl]
        if fine is not None and targets:
            left = sum(estimate_tokens(seg.slots[si].pieces[pi].text) for si, pi in targets)
            want = rate * seg.compressible_tokens
            fine_rate = min(1.0, want / left) if left else 1.0
            if out.coarse_decision == "floor":
                # The floor kept more because the ranking was flat; squeezing the survivors harder to meet
                # the rate anyway would undo it. They are compressed to the rate plus the floor's allowance
                # (never softer than after a normal coarse pass): the overshoot stays the stated one.
                over = (rate + self.settings.coarse_floor_max_overshoot) * seg.compressible_tokens
                fine_rate = max(fine_rate, min(1.0, over / left, rate / min(1.0, rate * self.settings.coarse_slack)))
            if fine_rate < 1.0 - MIN_FINE_RATE_GAIN:
                # Deterministic, prefix-cache friendly: each piece's model rate depends on the piece alone
                # (and the request's rate on a 0.05 grid), and a piece compressed before is reused as it
                # was, so a shared document reaches the site as the same bytes in every request.
                fine_rate = quantize_rate(fine_rate)
                out.fine_rate = fine_rate
                pieces = [seg.slots[si].pieces[pi] for si, pi in targets]
                if left * 4 > THREAD_BODY_BYTES or any(script_of(p.text) == "ja" for p in pieces):
                    pieces = await asyncio.to_thread(_prepare, pieces)
                else:
                    pieces = _prepare(pieces)
                rates = [quantize_rate(model_rate(fine_rate, len(units(p.text)), _atom_units(p))) for p in pieces]
                results: list[str | None] = [self.doc_cache.get(p.text, r) for p, r in zip(pieces, rates)]
                groups: dict[float, list[int]] = {}
                for i, got in enumerate(results):
                    if got is None:
                        groups.setdefault(rates[i], []).append(i)
                t0 = time.monotonic()
                skipped: list[str] = []
                bad = 0
                if groups:
                    remaining = t_end - time.monotonic()
                    if remaining <= 0:
                        skipped.append("deadline")
                    else:
                        answers = await asyncio.gather(*(
                            _fine_call(fine, [pieces[i].text for i in idx], r, remaining) for r, idx in groups.items()
                        ))
                        big = left * 4 > THREAD_BODY_BYTES
                        for (r, idx), res in zip(groups.items(), answers):
                            if isinstance(res, Skipped):
                                skipped.append(res.reason)
                                continue
                            group = [pieces[i] for i in idx]
                            restored = (await asyncio.to_thread(_restore_all, group, res.texts) if big
                                        else _restore_all(group, res.texts))
                            for i, new in zip(idx, restored):
                                if new is None:
                                    bad += 1  # not a subsequence of the original: keep the original
                                    continue
                                results[i] = new
                                self.doc_cache.put(pieces[i].text, r, new)
                out.fine_s = time.monotonic() - t0
                done = sum(x is not None for x in results)
                if not done and skipped:
                    out.fine = skipped[0]
                else:
                    out.fine = "ok"
                    notes = ([f"kept_original={bad}"] if bad else []) + ([f"skipped={skipped[0]}"] if skipped else [])
                    if notes:
                        out.fine = f"ok({','.join(notes)})"
                    for (si, pi), p, new in zip(targets, pieces, results):
                        if new is not None and new != p.text:
                            repl[(si, pi)] = new
            else:
                out.fine = "not_needed"

        out.doc_texts_after = [
            "".join(repl.get((d.slot, pi), seg.slots[d.slot].pieces[pi].text) for pi in d.pieces)
            for d in seg.documents
        ]
        if len(repl) == len(replayed):
            fine_failed = out.fine not in ("none", "not_needed") and not out.fine.startswith("ok")
            out.reason = "fine_" + out.fine if fine_failed else "no_change"
            if replayed:
                out.body = rebuild(body, seg, replayed)
            return out
        self.remember(seg, repl)
        new_body = rebuild(body, seg, repl)
        out.body = new_body
        out.reason = "compressed"
        removed = 0
        comp_removed = 0
        for (si, pi), text in repl.items():
            p = seg.slots[si].pieces[pi]
            d = estimate_tokens(p.text) - estimate_tokens(text)
            removed += d
            if p.compress:
                comp_removed += d
        out.tokens_after = max(0, seg.total_tokens - removed)
        out.comp_after = max(0, seg.compressible_tokens - comp_removed)
        return out
