"""OpenAI request understanding: which requests to inspect, parsing the body once, building features."""

from extproc.gateway.request.openai import (
    INSPECTED_PATHS,
    Inspection,
    body_features,
    estimate_tokens,
    inspect_headers,
    parse_json_body,
)

__all__ = [
    "INSPECTED_PATHS",
    "Inspection",
    "body_features",
    "estimate_tokens",
    "inspect_headers",
    "parse_json_body",
]
