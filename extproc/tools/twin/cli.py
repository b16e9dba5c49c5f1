"""`aigrid twin`: the grid twin. `run` sweeps arms over rates and seeds (goodput at SLO, intervals,
charts, summary.json); `scale` runs the scale study; `rank` ranks the RAG corpora once. Bad input: a message naming the key, exit 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _scenario(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario  # noqa: PLC0415

    over = {}
    if args.arms:
        over["arms"] = [a.strip() for a in args.arms.split(",") if a.strip()]
    sc = load_scenario(args.scenario or REFERENCE_SCENARIO, **over)
    if args.seeds:
        sc = sc.model_copy(update={"sweep": sc.sweep.model_copy(update={"seeds": list(range(1, args.seeds + 1))})})
    return sc


def _run(args: argparse.Namespace) -> int:
    from extproc.tools.twin.experiment import run_experiment  # noqa: PLC0415
    from extproc.tools.twin.plots import write_charts  # noqa: PLC0415
    from extproc.tools.twin.scenario import ScenarioError  # noqa: PLC0415

    try:
        sc = _scenario(args)
    except ScenarioError as exc:
        print(f"aigrid twin: {exc}", file=sys.stderr)
        return 2
    doc = run_experiment(sc, sc.arms, progress=lambda m: print(m, flush=True), workers=args.workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc["charts"] = write_charts(doc, out)
    (out / "twin.json").write_text(json.dumps(doc, indent=1))
    for k, v in doc["arms"].items():
        if "goodput" in v:
            g = v["goodput"]
            print(f"{k:10s} goodput {g['value']:6.2f} req/s  95% CI [{g['ci95'][0]:.2f}, {g['ci95'][1]:.2f}]")
        else:
            print(f"{k:10s} not run: {v['unavailable']}")
    for k, v in doc["compare"].items():
        if "/" in k:
            if v["value"] is None or None in v["ci95"]:
                print(f"{k:10s} undefined ({v.get('undefined', 'no interval')})")
            else:
                print(f"{k:10s} {v['value']:.2f}x  95% CI [{v['ci95'][0]:.2f}, {v['ci95'][1]:.2f}]")
    print(f"report: {out / 'twin.json'}")
    return 0


def _scale(args: argparse.Namespace) -> int:
    from extproc.tools.twin.plots import scale_chart  # noqa: PLC0415
    from extproc.tools.twin.scale import run_scale  # noqa: PLC0415
    from extproc.tools.twin.scenario import ScenarioError  # noqa: PLC0415

    try:
        sc = _scenario(args)
    except ScenarioError as exc:
        print(f"aigrid twin: {exc}", file=sys.stderr)
        return 2
    gws = tuple(int(x) for x in args.gateways.split(",") if x.strip())
    sites = tuple(int(x) for x in args.sites.split(",") if x.strip())
    if args.in_flight_publish_ms is not None:
        sc = sc.model_copy(update={"in_flight_publish_ms": args.in_flight_publish_ms})
    doc = run_scale(sc, args.arm, gws, sites, duration_s=args.duration, progress=lambda m: print(m, flush=True),
                    workers=args.workers)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    doc["chart"] = str(scale_chart(doc, out / "scale.png"))
    (out / "scale.json").write_text(json.dumps(doc, indent=1))
    print(f"scale study in {doc['wall_seconds']:.0f} s wall, {doc['cpu_seconds_all']:.0f} s CPU; chart {doc['chart']}")
    return 0


def _rank(args: argparse.Namespace) -> int:
    """Rank each scenario's RAG corpus with the shipped ranker once, so no twin run pays it: into the
    user's cache, or (`--shipped`, for maintainers) into the copy the package ships."""
    from extproc.tools.twin.arms import ARMS  # noqa: PLC0415
    from extproc.tools.twin.gateway_adapter import (  # noqa: PLC0415
        SHIPPED_RANKINGS,
        ranking_inputs,
        rankings_key,
        shipped_rankings,
        write_shipped_rankings,
    )
    from extproc.gateway.compression.rewriter import build_ranker  # noqa: PLC0415
    from extproc.tools.twin.scenario import GRID_SCENARIOS, REFERENCE_SCENARIO, ScenarioError, load_scenario  # noqa: PLC0415

    paths = args.scenario or [str(REFERENCE_SCENARIO), *map(str, GRID_SCENARIOS)]
    keep: set[str] = set()
    for path in paths:
        try:
            sc = load_scenario(path)
        except ScenarioError as exc:
            print(f"aigrid twin: {exc}", file=sys.stderr)
            return 2
        # Every compressing arm ranks with the scenario's one compressor: the first one stands for all.
        for arm in [a for a in ARMS if ARMS[a].compress][:1]:
            got = ranking_inputs(sc, ARMS[arm])
            if got is None:
                continue
            key = rankings_key(got[0], got[1], build_ranker(got[1]))
            if key in keep:
                print(f"{path}: same corpus and ranker as an earlier scenario ({key})")
                continue
            keep.add(key)
            if args.shipped:
                print(f"{path}: wrote {write_shipped_rankings(*got)}", flush=True)
            else:
                n = len(shipped_rankings(*got))
                print(f"{path}: {n} RAG items ranked ({key})", flush=True)
    if args.shipped:
        for stale in SHIPPED_RANKINGS.glob("*.json.gz"):
            if stale.name.removesuffix(".json.gz") not in keep:
                stale.unlink()
                print(f"removed {stale} (no scenario ranks to it any more)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("twin", help="the grid twin: goodput at SLO per arm in virtual time; scale study")
    tsub = p.add_subparsers(dest="twin_command", metavar="ACTION")
    tsub.required = True
    for name, fn, helptext in (("run", _run, "sweep arms x rates x seeds; goodput with intervals, charts"),
                               ("scale", _scale, "gateways and sites scale study")):
        q = tsub.add_parser(name, help=helptext)
        q.add_argument("--scenario", "-s", default=None, help="scenario YAML (default: the reference scenario)")
        q.add_argument("--arms", default=None, help="comma-separated arms, overriding the scenario's")
        q.add_argument("--seeds", type=int, default=None, help="use seeds 1..N")
        q.add_argument("--out", default="aigrid-report/twin", help="output directory")
        q.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                       help="worker processes (default: up to 2); the numbers do not depend on it")
        q.set_defaults(func=fn)
        if name == "scale":
            q.add_argument("--arm", default="R", help="arm of the scale study (default R)")
            q.add_argument("--gateways", default="1,4,16,64")
            q.add_argument("--sites", default="3,10,50")
            q.add_argument("--duration", type=float, default=8.0, help="simulated seconds per run (default 8)")
            q.add_argument("--in-flight-publish-ms", type=float, default=None,
                           help="gateway replicas' in-flight exchange period (0: off, the per-gateway counts alone)")
    q = tsub.add_parser("rank", help="rank the scenarios' RAG corpora with the shipped ranker once (a cache)")
    q.add_argument("--scenario", "-s", action="append", default=None,
                   help="scenario YAML (repeatable; default: the reference scenario and the grids)")
    q.add_argument("--shipped", action="store_true",
                   help="write the package's shipped copy instead of the user cache (maintainers, after a ranker change)")
    q.set_defaults(func=_rank)
