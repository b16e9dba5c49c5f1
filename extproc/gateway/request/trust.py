"""The trust rule for a request's SLA class, as a pure function.

The class decides who gets the edge GPUs, so it must never come from the client alone. By default every
request gets the operator's `default_class`; the operator may name one trusted source:

- `header`: a header a trusted front proxy sets. Envoy strips the client's copy in its early header
  mutation for every peer outside `front_proxy_cidrs` (see envoyconf), so what reaches us was set by the
  front proxy (or by nobody).
- `api_key`: the client's API key (`Authorization: Bearer K` or `x-api-key: K`) looked up in a map of
  SHA-256 digests → class. The config holds digests only; the key itself is never stored or logged.
- `jwt`: a claim of a JWT that Envoy's `jwt_authn` filter verified, read from the request's dynamic
  metadata (`payload_in_metadata`, forwarded to ext_proc by `metadata_options`). An unsigned or invalid
  token never reaches that metadata.

Anything unknown, missing or malformed gives the default class: a client cannot promote itself.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from extproc.gateway.request.features import SlaClass
from extproc.wire.contract import PRIORITY_HEADER

API_KEY_HEADERS = ("authorization", "x-api-key")
# Where Envoy's jwt_authn filter puts the verified payload (its filter name is the namespace).
JWT_NAMESPACE = "envoy.filters.http.jwt_authn"
JWT_METADATA_KEY = "aigrid_jwt"


class SlaSource(str, Enum):
    default = "default"
    header = "header"
    api_key = "api_key"
    jwt = "jwt"


def api_key_digest(key: str) -> str:
    """The digest the config stores for an API key (`aigrid trust hash-key` prints it)."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class TrustRule:
    source: SlaSource = SlaSource.default
    default_class: SlaClass = SlaClass.standard
    header: str = PRIORITY_HEADER
    # SHA-256 hex digest of an API key → its class.
    api_keys: Mapping[str, SlaClass] = field(default_factory=dict)
    jwt_claim: str = "aigrid_class"


def _strict_class(value: Any) -> SlaClass | None:
    """A class name exactly (case and surrounding blanks aside); anything else is no class."""
    if not isinstance(value, str):
        return None
    v = value.strip().lower()
    for c in SlaClass:
        if c.value == v:
            return c
    return None


def _api_key(headers: Mapping[str, str]) -> str | None:
    auth = headers.get("authorization", "")
    scheme, _, token = auth.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def _lookup_key(keys: Mapping[str, SlaClass], key: str) -> SlaClass | None:
    digest = api_key_digest(key)
    for known, cls in keys.items():
        # Constant-time comparison: the lookup must not leak how much of a digest matched.
        if hmac.compare_digest(known, digest):
            return cls
    return None


def _claim(payload: Mapping[str, Any] | None, path: str) -> Any:
    """A claim by dotted path (`realm.class`) in the verified payload."""
    cur: Any = payload
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def resolve_sla(rule: TrustRule, headers: Mapping[str, str], jwt_payload: Mapping[str, Any] | None = None) -> SlaClass:
    """The request's SLA class under `rule`. `headers`: lower-case names; `jwt_payload`: the payload
    jwt_authn verified (None when there was none)."""
    found: SlaClass | None = None
    if rule.source is SlaSource.header:
        found = _strict_class(headers.get(rule.header.lower()))
    elif rule.source is SlaSource.api_key:
        key = _api_key(headers)
        found = _lookup_key(rule.api_keys, key) if key else None
    elif rule.source is SlaSource.jwt:
        found = _strict_class(_claim(jwt_payload, rule.jwt_claim))
    return found if found is not None else rule.default_class


def headers_read(rule: TrustRule) -> frozenset[str]:
    """The request headers the rule looks at (the gateway decodes only those)."""
    if rule.source is SlaSource.header:
        return frozenset({rule.header.lower()})
    if rule.source is SlaSource.api_key:
        return frozenset(API_KEY_HEADERS)
    return frozenset()


def rule_from_settings(settings: Any) -> TrustRule:
    """The rule for a `TrustSettings` (extproc.gateway.config.trust)."""
    return TrustRule(
        source=SlaSource(settings.sla_source),
        default_class=SlaClass(settings.default_class),
        header=settings.header,
        api_keys={k: SlaClass(v) for k, v in settings.api_keys.items()},
        jwt_claim=settings.jwt.claim if settings.jwt is not None else "aigrid_class",
    )
