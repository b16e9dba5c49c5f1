"""The one percentile the tools use, with the two definitions they report in.

- `linear` (numpy's default): interpolates between the closest ranks; the load tester's latency tables.
- `nearest` (nearest rank): always a value that was observed; the twin's and the soak run's figures, where
  "p95 TTFT" means a request that really waited that long.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

Method = Literal["linear", "nearest"]


def percentile(values: Sequence[float], q: float, method: Method = "linear") -> float | None:
    """q in [0, 100]; None when there is no value."""
    if not values:
        return None
    xs = sorted(values)
    if method == "nearest":
        k = max(0, min(len(xs) - 1, math.ceil(q / 100.0 * len(xs)) - 1))
        return xs[k]
    if len(xs) == 1:
        return float(xs[0])
    pos = (len(xs) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return float(xs[lo] + (xs[hi] - xs[lo]) * (pos - lo))
