"""A DCGM exporter's metrics page → per-GPU samples. Pure.

Field names and units follow dcgm-exporter's etc/default-counters.csv:
  DCGM_FI_DEV_GPU_UTIL (%), DCGM_FI_DEV_FB_USED / DCGM_FI_DEV_FB_FREE / DCGM_FI_DEV_FB_RESERVED (MiB),
  DCGM_FI_DEV_POWER_USAGE (W), DCGM_FI_DEV_GPU_TEMP (C); DCGM_FI_DEV_FB_TOTAL (MiB) when configured.
Each series carries `gpu` (index) and `UUID` labels, plus `modelName`, `device`, `Hostname` and, with pod
attribution, `namespace`/`pod`/`container` (several series per GPU under MIG).

DCGM writes "blank" sentinels for a field it cannot read (the exporter's README shows
`DCGM_FI_DEV_MEMORY_TEMP{...} 9223372036854775794`): those mean "not available" and become None. Any other
impossible value (NaN, negative, utilisation above 100 %) rejects the whole scrape.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from extproc.agent.prometheus import MetricsRejected, parse_samples

MIB = 1024 * 1024
# dcgm_structs: DCGM_INT64_BLANK = 0x7ffffffffffffff0 and DCGM_FP64_BLANK = 140737488355328.0; values at or
# above them are the blank / not-found / not-supported / not-permissioned markers.
DCGM_INT64_BLANK = float(0x7FFFFFFFFFFFFFF0)
DCGM_FP64_BLANK = 140737488355328.0
# Largest plausible GPU memory (MiB) and power (W); beyond these a value is corrupt.
_MAX_FB_MIB = 64 * 1024 * 1024
_MAX_POWER_W = 100_000.0

GPU_UTIL = "DCGM_FI_DEV_GPU_UTIL"
FB_USED = "DCGM_FI_DEV_FB_USED"
FB_FREE = "DCGM_FI_DEV_FB_FREE"
FB_RESERVED = "DCGM_FI_DEV_FB_RESERVED"
FB_TOTAL = "DCGM_FI_DEV_FB_TOTAL"
POWER = "DCGM_FI_DEV_POWER_USAGE"
TEMP = "DCGM_FI_DEV_GPU_TEMP"
FIELDS = (GPU_UTIL, FB_USED, FB_FREE, FB_RESERVED, FB_TOTAL, POWER, TEMP)


@dataclass(frozen=True, slots=True)
class GpuSample:
    """One GPU as a source sees it, in report units (fraction, bytes, W, C); None = not available."""

    index: int
    uuid: str = ""
    name: str = ""
    utilization: float | None = None
    memory_used_bytes: int | None = None
    memory_total_bytes: int | None = None
    power_watts: float | None = None
    temperature_c: float | None = None


def _is_blank(v: float) -> bool:
    return v >= DCGM_FP64_BLANK  # covers the int64 sentinels too (they are larger)


def _check(field: str, gpu: str, v: float, lo: float, hi: float) -> float | None:
    if not math.isfinite(v):
        raise MetricsRejected(f"{field}{{gpu={gpu}}}={v!r} is not a finite number")
    if _is_blank(v):
        return None
    if v < lo or v > hi:
        raise MetricsRejected(f"{field}{{gpu={gpu}}}={v!r} outside [{lo}, {hi}]")
    return v


def parse_dcgm(text: str) -> list[GpuSample]:
    """Every GPU on the page, by index. Raises MetricsRejected with a reason."""
    samples = parse_samples(text, FIELDS)
    if GPU_UTIL not in samples and FB_USED not in samples:
        raise MetricsRejected(f"neither {GPU_UTIL} nor {FB_USED} in the metrics (not a DCGM exporter?)")
    gpus: dict[str, dict[str, object]] = {}
    for field in FIELDS:
        for labels, value in samples.get(field, ()):
            gpu = labels.get("gpu")
            if gpu is None or not gpu.isdigit() or len(gpu) > 6:
                raise MetricsRejected(f"{field} series without a numeric gpu label: {labels}")
            g = gpus.setdefault(gpu, {"uuid": labels.get("UUID", ""), "name": labels.get("modelName", "")})
            if field == GPU_UTIL:
                v = _check(field, gpu, value, 0, 100)
                if v is not None:
                    # Several series per GPU (MIG instances, pod attribution): the busiest counts.
                    prev = g.get(field)
                    g[field] = v if prev is None else max(float(prev), v)  # type: ignore[arg-type]
            elif field == POWER:
                v = _check(field, gpu, value, 0, _MAX_POWER_W)
                if v is not None:
                    g.setdefault(field, v)
            elif field == TEMP:
                v = _check(field, gpu, value, -100, 1000)
                if v is not None:
                    g.setdefault(field, v)
            else:
                v = _check(field, gpu, value, 0, _MAX_FB_MIB)
                if v is not None:
                    g.setdefault(field, v)
    out: list[GpuSample] = []
    for gpu, g in sorted(gpus.items(), key=lambda kv: int(kv[0])):
        used = g.get(FB_USED)
        total: float | None = g.get(FB_TOTAL)  # type: ignore[assignment]
        if total is None and used is not None and g.get(FB_FREE) is not None:
            total = float(used) + float(g[FB_FREE]) + float(g.get(FB_RESERVED) or 0.0)  # type: ignore[arg-type]
        used_b = int(float(used) * MIB) if used is not None else None  # type: ignore[arg-type]
        total_b = int(total * MIB) if total else None
        if used_b is not None and total_b is not None and used_b > total_b:
            raise MetricsRejected(f"gpu {gpu}: framebuffer used {used} MiB > total {total} MiB")
        util = g.get(GPU_UTIL)
        out.append(
            GpuSample(
                index=int(gpu),
                uuid=str(g["uuid"]),
                name=str(g["name"]),
                utilization=float(util) / 100.0 if util is not None else None,  # type: ignore[arg-type]
                memory_used_bytes=used_b,
                memory_total_bytes=total_b,
                power_watts=g.get(POWER),  # type: ignore[arg-type]
                temperature_c=g.get(TEMP),  # type: ignore[arg-type]
            )
        )
    return out
