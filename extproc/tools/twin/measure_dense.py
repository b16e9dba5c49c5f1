"""`python -m extproc.tools.twin.measure_dense [RANKER]`: the embedding model's pass over the reference
corpus on this machine (`gateway_adapter.measure_dense`), as one JSON line on stdout.

Its own process, so that `aigrid demo` can run it while the twin's worker processes (forked) sweep the
arms that do not compress: a model loading in a thread of the parent would be forked half-imported."""

from __future__ import annotations

import json
import sys

from extproc.tools.twin.gateway_adapter import measure_dense
from extproc.tools.twin.scenario import REFERENCE_SCENARIO, load_scenario
from extproc.tools.workload.rag import build_corpus


def main(argv: list[str]) -> int:
    ranker = argv[0] if argv else "auto"
    out = measure_dense(build_corpus(load_scenario(REFERENCE_SCENARIO).workload.rag), ranker)
    print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
