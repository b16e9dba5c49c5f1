"""The load report: protobuf schema (proto/aigrid/v1/load_report.proto), its Redis keys, and validation."""

from extproc.wire.loadreport.codec import (
    SCHEMA_VERSION,
    ReportRejected,
    decode_report,
    encode_report,
)
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.loadreport.load_report_pb2 import EngineStats, GpuStats, NodeLoadReport

__all__ = [
    "SCHEMA_VERSION",
    "EngineStats",
    "GpuStats",
    "NodeLoadReport",
    "RedisKeys",
    "ReportRejected",
    "decode_report",
    "encode_report",
]
