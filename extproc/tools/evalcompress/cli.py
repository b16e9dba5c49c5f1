"""`aigrid eval-compression`: run the compressor over the shipped RAG QA set and print the quality table.

Without --model only the coarse step (a real ranker) runs and meets the rate by dropping documents; with
--model PATH (an LLMLingua-2 token-classifier directory) the fine step runs too. Heavy imports happen
only when the command runs, so `aigrid --help` stays fast.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "eval-compression",
        help="evaluate prompt compression on a RAG QA set (answer/gold retention, rate, latency)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", default=None, help="JSONL RAG QA set (default: the shipped hard set rag_eval_hard.jsonl)")
    p.add_argument("--easy", action="store_true", help="the shipped easy set (rag_eval.jsonl) instead")
    p.add_argument("--kind", default=None, help="only items of this kind (paraphrase, distractor, version, bridge)")
    p.add_argument("--model", default=None, help="LLMLingua-2 model directory (omit: coarse step only)")
    p.add_argument("--rates", default="0.33,0.5,0.7", help="comma-separated keep-rates (default 0.33,0.5,0.7)")
    p.add_argument("--ranker", default="auto", choices=["auto", "bm25", "embedding", "hybrid"])
    p.add_argument("--embedding-model", default=None,
                   help="sentence-transformers directory for the coarse ranker (default: the bundled all-MiniLM-L6-v2)")
    p.add_argument("--embedding-languages", default="en",
                   help="comma-separated languages 'auto' ranks with the embedding model (en, ja; default en)")
    p.add_argument("--no-coarse", action="store_true", help="skip the coarse step (fine step only)")
    p.add_argument("--lang", default=None, help="only items of this language (en, ja)")
    p.add_argument("--limit", type=int, default=None, help="only the first N items (after --lang)")
    p.add_argument("--json", dest="json_out", default=None, help="write summary + per-item results here ('-' = stdout)")
    p.add_argument("--floor-curve", default=None,
                   help="instead of the table: sweep the quality floor's two numbers (flat margin x max overshoot), "
                        "coarse step only, and write retention vs achieved rate per language here (JSON)")
    p.add_argument("--chart", default=None, help="with --floor-curve: draw the curve into this PNG")
    p.add_argument("--flat-margin", type=float, default=None, help="the floor's score margin (default: the setting's)")
    p.add_argument("--max-overshoot", type=float, default=None,
                   help="the floor's largest overshoot of the rate, in rate points (default: the setting's)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return asyncio.run(_run(args))


async def _run(args: argparse.Namespace) -> int:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    from extproc.gateway.compression.core.coarse import CoarseRanker  # noqa: PLC0415
    from extproc.gateway.compression.rewriter import build_fine_compressor  # noqa: PLC0415
    from extproc.gateway.config.compression import CompressionSettings  # noqa: PLC0415
    from extproc.tools.evalcompress.evaluate import (  # noqa: PLC0415
        DEFAULT_DATA,
        EASY_DATA,
        evaluate,
        load_items,
        report_json,
        summarize,
    )

    console = Console(stderr=args.json_out == "-", width=None if sys.stdout.isatty() else 140)
    try:
        rates = [float(x) for x in args.rates.split(",") if x.strip()]
    except ValueError:
        console.print(f"[red]--rates: not a list of numbers: {args.rates!r}[/red]")
        return 2
    if not rates or any(not 0 < r <= 1 for r in rates):
        console.print("[red]--rates: each rate must be in (0, 1][/red]")
        return 2
    data = args.data or (EASY_DATA if args.easy else DEFAULT_DATA)
    items = load_items(data)
    if args.kind:
        items = [i for i in items if i.get("kind", "-") == args.kind]
    if args.lang:
        items = [i for i in items if i["lang"] == args.lang]
    if args.limit:
        items = items[: args.limit]
    if not items:
        console.print("[red]no items to evaluate[/red]")
        return 2
    langs = [x.strip() for x in args.embedding_languages.split(",") if x.strip()]
    if any(x not in ("en", "ja") for x in langs):
        console.print(f"[red]--embedding-languages: each must be en or ja: {args.embedding_languages!r}[/red]")
        return 2
    settings = CompressionSettings(
        enabled=True, model_path=args.model, ranker=args.ranker, coarse=not args.no_coarse, min_prompt_tokens=0,
        embedding_model_path=args.embedding_model, embedding_languages=langs,
        # Each item and rate is measured cold: no ranking or compressed piece reused from another rate.
        cache_max_documents=0, cache_max_chars=0, cache_max_rankings=0,
        **({"coarse_flat_margin": args.flat_margin} if args.flat_margin is not None else {}),
        **({"coarse_floor_max_overshoot": args.max_overshoot} if args.max_overshoot is not None else {}),
    )
    # No sentence-vector cache either: each item and rate is measured cold (latency included).
    ranker = None if args.no_coarse else CoarseRanker(args.ranker, settings.embedding_model_path, settings.embedding_languages,
                                                      vector_cache_documents=0, vector_cache_floats=0)
    if ranker is not None and args.ranker != "bm25":
        if not await ranker.ready():
            console.print("[yellow]embedding model unavailable: ranking with BM25 only[/yellow]")
    if args.floor_curve:
        return await _curve(args, items, rates, settings, ranker, console, str(data))
    fine = build_fine_compressor(settings) if args.model else None
    try:
        results = await evaluate(items, rates, settings=settings, fine=fine, ranker=ranker)
    finally:
        if fine is not None:
            await fine.close()
        if ranker is not None:
            await ranker.close()
    rows = summarize(results)
    title = "compression eval: " + ("coarse + fine (model: " + args.model + ")" if args.model else "coarse step only")
    t = Table(title=title)
    for col in ("kind", "lang", "rate", "n", "answer kept", "all gold kept", "gold@1", "achieved",
                "achieved (no floor)", "rate ±0.05", "floor", "prompt ratio", "p50 ms", "p95 ms", "ranker", "fine"):
        t.add_column(col, justify="right" if col not in ("kind", "lang", "ranker", "fine") else "left")
    for r in rows:
        unf = r["achieved_rate_unfloored"]
        t.add_row(
            r["kind"], r["lang"], f"{r['rate']:.2f}", str(r["n"]), f"{r['answer_retention']:.1%}",
            f"{r['gold_retention']:.1%}", f"{r['gold_top1']:.1%}", f"{r['achieved_rate']:.2f}",
            "-" if unf is None else f"{unf:.2f}", f"{r['rate_within']:.0%}", f"{r['floor_share']:.0%}",
            f"{r['prompt_ratio']:.2f}",
            f"{r['latency_ms_p50']:.1f}", f"{r['latency_ms_p95']:.1f}", ",".join(r["rankers"]), ",".join(r["fine"]),
        )
    console.print(t)
    if args.json_out:
        meta = {"data": str(data), "kind": args.kind, "model": args.model, "rates": rates, "ranker": args.ranker,
                "coarse": not args.no_coarse, "items": len(items)}
        text = report_json(rows, results, meta)
        if args.json_out == "-":
            sys.stdout.write(text + "\n")
        else:
            with open(args.json_out, "w", encoding="utf-8") as f:
                f.write(text + "\n")
    return 0


async def _curve(args: argparse.Namespace, items: list[Any], rates: list[float], settings: Any, ranker: Any,
                 console: Any, data: str) -> int:
    """`--floor-curve`: the floor's trade, retention against achieved rate, per language."""
    import json  # noqa: PLC0415

    from rich.table import Table  # noqa: PLC0415

    from extproc.tools.evalcompress.evaluate import floor_curve  # noqa: PLC0415

    if ranker is None:
        console.print("[red]--floor-curve needs the coarse step[/red]")
        return 2
    try:
        rows = await floor_curve(items, rates, settings=settings, ranker=ranker)
    finally:
        await ranker.close()
    t = Table(title="the quality floor's trade (coarse step only)")
    for col in ("margin", "max overshoot", "lang", "rate", "n", "all gold kept", "achieved", "rate ±0.05", "floor"):
        t.add_column(col, justify="right")
    for r in rows:
        t.add_row(f"{r['margin']:g}", f"{r['max_overshoot']:g}", r["lang"], f"{r['rate']:.2f}", str(r["n"]),
                  f"{r['gold_retention']:.1%}", f"{r['achieved_rate']:.3f}", f"{r['rate_within']:.0%}",
                  f"{r['floor_share']:.0%}")
    console.print(t)
    meta = {"data": data, "ranker": args.ranker, "rates": rates, "items": len(items)}
    with open(args.floor_curve, "w", encoding="utf-8") as f:
        f.write(json.dumps({"meta": meta, "curve": rows}, indent=1) + "\n")
    if args.chart:
        from extproc.tools.evalcompress.chart import floor_chart  # noqa: PLC0415

        floor_chart(rows, args.chart, title=f"{Path(data).name}, ranker {args.ranker}")
    return 0
