"""An engine's /v1/models answer → the model ids it serves. Pure; bounded; never raises on odd input."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

import orjson

from extproc.wire.contract import MODELS_PATH

MAX_MODELS = 256
MAX_ID_LEN = 256


def models_url(metrics_url: str) -> str:
    """The engine's OpenAI model list beside its metrics endpoint (same scheme, host and port)."""
    p = urlsplit(metrics_url)
    return urlunsplit((p.scheme, p.netloc, MODELS_PATH, "", ""))


def parse_models(body: bytes) -> tuple[str, ...] | None:
    """Sorted model ids from an OpenAI list (`{"data": [{"id": ...}, ...]}`), or None when the body is
    not one. Ids that are not short printable strings are skipped (they end up in routing decisions)."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    data = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(data, list):
        return None
    ids: set[str] = set()
    for item in data[:MAX_MODELS]:
        mid = item.get("id") if isinstance(item, dict) else None
        if isinstance(mid, str) and 0 < len(mid) <= MAX_ID_LEN and mid.isprintable():
            ids.add(mid)
    return tuple(sorted(ids))
