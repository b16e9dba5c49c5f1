"""How much standard/batch traffic leaves the home site. Pure.

Hysteresis: spilling starts when the home's pressure reaches `spill_on` and stops only below `spill_off`,
so a site hovering at the threshold does not flap. While spilling, the fraction grows linearly from
`spill_off` (0) to `spill_full` (max_spill): traffic moves in proportion to load, never all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from extproc.gateway.request.features import SlaClass
from extproc.gateway.routing.views import SiteView

BAND_KEYS: tuple[str, ...] = ("spill_on", "spill_off", "spill_full", "max_spill", "batch_spill_boost")


class SpillBands(Protocol):
    """The spill step's parameters (`Spill.Params`); the deprecated `policy:` keys have the same names."""

    spill_on: float
    spill_off: float
    spill_full: float
    max_spill: float
    batch_spill_boost: float


def check_bands(p: SpillBands) -> None:
    if p.spill_off > p.spill_on:
        raise ValueError("spill_off must be <= spill_on (hysteresis band)")
    if p.spill_full <= p.spill_on:
        raise ValueError("spill_full must be > spill_on")


def legacy_policy_bands(policy: Any) -> dict[str, float]:
    """The bands an older aigrid.yaml set under `policy:` (only the keys it set)."""
    return {k: getattr(policy, k) for k in BAND_KEYS if k in policy.model_fields_set}


def next_spilling(prev: bool, pressure: float | None, p: SpillBands) -> bool:
    if pressure is None:
        return False
    if prev:
        return pressure > p.spill_off
    return pressure >= p.spill_on


def spill_fraction(pressure: float | None, spilling: bool, sla: SlaClass, p: SpillBands) -> float:
    if not spilling or pressure is None or sla is SlaClass.realtime:
        return 0.0
    span = p.spill_full - p.spill_off
    frac = min(1.0, max(0.0, (pressure - p.spill_off) / span)) * p.max_spill
    if sla is SlaClass.batch:
        frac *= p.batch_spill_boost
    return min(p.max_spill, frac)


def update_spill_states(
    views: Iterable[SiteView], prev: Mapping[str, bool], p: SpillBands
) -> dict[str, bool]:
    """New hysteresis state per site, from the previous one and the current pressures."""
    return {v.name: next_spilling(prev.get(v.name, False), v.pressure, p) for v in views}
