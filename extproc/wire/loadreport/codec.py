"""Encode and validate load reports. Pure: bytes in, a checked message or a reason out.

A report is rejected, never clamped into plausibility, when a value is outside what the hardware can
produce: one bad node must not make a whole site look idle (a NaN utilisation would otherwise average
into nonsense).
"""

from __future__ import annotations

import math

from google.protobuf.message import DecodeError

from extproc.wire.contract import SITE_NAME
from extproc.wire.loadreport.load_report_pb2 import NodeLoadReport

SCHEMA_VERSION = 1
# Larger than any honest report (hundreds of GPUs per node would still be a few KiB).
MAX_REPORT_BYTES = 64 * 1024
MAX_GPUS = 1024
MAX_REQUESTS = 10_000_000


class ReportRejected(ValueError):
    """The bytes are not a usable v1 load report; the message says why."""


def encode_report(report: NodeLoadReport) -> bytes:
    if not report.schema_version:
        report.schema_version = SCHEMA_VERSION
    return report.SerializeToString()


def _fraction(name: str, v: float) -> None:
    if not math.isfinite(v) or v < 0 or v > 1.0 + 1e-9:
        raise ReportRejected(f"{name}={v!r} is not a fraction in [0, 1]")


def validate_report(r: NodeLoadReport) -> NodeLoadReport:
    if r.schema_version != SCHEMA_VERSION:
        raise ReportRejected(f"schema_version {r.schema_version} is not {SCHEMA_VERSION}")
    if not SITE_NAME.match(r.site):
        raise ReportRejected(f"site {r.site!r} is not a valid site name")
    if not r.node or len(r.node) > 253:
        raise ReportRejected("node name missing or too long")
    if r.sequence == 0:
        raise ReportRejected("sequence must start at 1")
    if len(r.gpus) > MAX_GPUS:
        raise ReportRejected(f"{len(r.gpus)} GPUs is more than {MAX_GPUS}")
    for g in r.gpus:
        if g.HasField("utilization"):
            _fraction(f"gpus[{g.index}].utilization", g.utilization)
        if g.HasField("memory_used_bytes") and g.HasField("memory_total_bytes"):
            if g.memory_total_bytes == 0 or g.memory_used_bytes > g.memory_total_bytes:
                raise ReportRejected(f"gpus[{g.index}] memory used > total")
        for fname in ("power_watts", "temperature_c"):
            if g.HasField(fname):
                v = getattr(g, fname)
                if not math.isfinite(v) or v < -100 or v > 100_000:
                    raise ReportRejected(f"gpus[{g.index}].{fname}={v!r} out of range")
    if r.HasField("engine"):
        e = r.engine
        if e.HasField("kv_cache_usage"):
            _fraction("engine.kv_cache_usage", e.kv_cache_usage)
        if e.requests_running > MAX_REQUESTS or e.requests_waiting > MAX_REQUESTS:
            raise ReportRejected("engine request counts out of range")
    return r


def decode_report(data: bytes) -> NodeLoadReport:
    """Parse and validate; raises ReportRejected with a reason for anything unusable."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ReportRejected(f"expected bytes, got {type(data).__name__}")
    if len(data) == 0:
        raise ReportRejected("empty value")
    if len(data) > MAX_REPORT_BYTES:
        raise ReportRejected(f"{len(data)} bytes is larger than {MAX_REPORT_BYTES}")
    r = NodeLoadReport()
    try:
        r.ParseFromString(bytes(data))
    except DecodeError as exc:
        raise ReportRejected(f"not a NodeLoadReport protobuf: {exc}") from None
    return validate_report(r)
