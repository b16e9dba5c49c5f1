"""The response side, pure: token usage from OpenAI-shaped responses (JSON bodies and SSE streams, parsed
incrementally because chunk boundaries do not follow event boundaries), the request rewrite that asks a
stream for its usage and the matching strip of that extra chunk, the gateway→observer request summary,
and metric names/labels (OpenTelemetry GenAI semantic conventions under Prometheus naming).

No I/O here: the ext_proc adapter (`extproc/gateway/observe/observer.py`) feeds bytes in and reads results out.
"""
