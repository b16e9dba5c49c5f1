"""How much standard/batch traffic leaves the home site. Pure.

Hysteresis: spilling starts when the home's pressure reaches `spill_on` and stops only below `spill_off`,
so a site hovering at the threshold does not flap. While spilling, the fraction grows linearly from
`spill_off` (0) to `spill_full` (max_spill): traffic moves in proportion to load, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from extproc.config.schema import PolicySettings
from extproc.routing.features import SlaClass
from extproc.routing.views import SiteView


def next_spilling(prev: bool, pressure: float | None, p: PolicySettings) -> bool:
    if pressure is None:
        return False
    if prev:
        return pressure > p.spill_off
    return pressure >= p.spill_on


def spill_fraction(pressure: float | None, spilling: bool, sla: SlaClass, p: PolicySettings) -> float:
    if not spilling or pressure is None or sla is SlaClass.realtime:
        return 0.0
    span = p.spill_full - p.spill_off
    frac = min(1.0, max(0.0, (pressure - p.spill_off) / span)) * p.max_spill
    if sla is SlaClass.batch:
        frac *= p.batch_spill_boost
    return min(p.max_spill, frac)


def update_spill_states(
    views: Iterable[SiteView], prev: Mapping[str, bool], p: PolicySettings
) -> dict[str, bool]:
    """New hysteresis state per site, from the previous one and the current pressures."""
    return {v.name: next_spilling(prev.get(v.name, False), v.pressure, p) for v in views}
