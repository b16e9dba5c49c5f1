"""ext_proc's `HttpHeaders` → the headers the gateway reads, as a plain dict (the request and response
sides' one decoder)."""

from __future__ import annotations

from envoy.service.ext_proc.v3 import external_processor_pb2 as ep


def header_map(headers: ep.HttpHeaders, wanted: frozenset[str]) -> dict[str, str]:
    """Only the wanted headers: decoding every header of every request is measurable CPU."""
    out: dict[str, str] = {}
    for h in headers.headers.headers:
        key = h.key
        if key in wanted:
            # Envoy sends raw_value (bytes); value is the older string field.
            out[key] = h.raw_value.decode("utf-8", "replace") if h.raw_value else h.value
    return out
