"""`trust:` in aigrid.yaml: where a request's SLA class may come from (see extproc.gateway.request.trust)."""

from __future__ import annotations

import ipaddress
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.wire.contract import PRIORITY_HEADER

ClassName = Literal["realtime", "standard", "batch"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class JwtSettings(_Strict):
    # The token issuer (`iss`) Envoy's jwt_authn filter accepts, and the JWKS file it verifies with.
    issuer: str = Field(min_length=1)
    jwks_path: str = Field(min_length=1)
    audiences: list[str] = Field(default_factory=list)
    # The verified claim holding the class; dotted for nested claims (`aigrid.class`).
    claim: str = Field(default="aigrid_class", pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$")
    # Where clients put the token (default `Authorization: Bearer ...`).
    header: str = Field(default="authorization", pattern=r"^[a-z0-9-]{1,64}$")


class TrustSettings(_Strict):
    # default: every request gets default_class; header: a header set by a trusted front proxy;
    # api_key: an API-key → class map; jwt: a claim of a JWT Envoy verified.
    sla_source: Literal["default", "header", "api_key", "jwt"] = "default"
    default_class: ClassName = "standard"
    # With sla_source header: its name, and the peers (CIDRs) allowed to set it. From every other peer
    # Envoy strips it before any filter runs.
    header: str = Field(default=PRIORITY_HEADER, pattern=r"^[a-z0-9-]{1,64}$")
    front_proxy_cidrs: list[str] = Field(default_factory=list)
    # With sla_source api_key: SHA-256 hex digest of each key → class (`aigrid trust hash-key KEY`).
    api_keys: dict[str, ClassName] = Field(default_factory=dict)
    jwt: JwtSettings | None = None

    @field_validator("front_proxy_cidrs")
    @classmethod
    def _cidrs(cls, v: list[str]) -> list[str]:
        for c in v:
            try:
                ipaddress.ip_network(c, strict=False)
            except ValueError as exc:
                raise ValueError(f"{c!r} is not a CIDR (e.g. 10.0.0.0/8): {exc}") from None
        return v

    @field_validator("api_keys")
    @classmethod
    def _digests(cls, v: dict[str, str]) -> dict[str, str]:
        for k in v:
            if len(k) != 64 or any(ch not in "0123456789abcdef" for ch in k):
                # Never echo the value: it may be a raw key pasted by mistake.
                raise ValueError("keys must be SHA-256 hex digests (64 lower-case hex characters) of the API keys, "
                                 "not the keys: `aigrid trust hash-key KEY` prints one")
        return v

    @model_validator(mode="after")
    def _source_complete(self) -> "TrustSettings":
        if self.sla_source == "header" and not self.front_proxy_cidrs:
            raise ValueError("sla_source header needs front_proxy_cidrs: the peers allowed to set the header")
        if self.sla_source == "api_key" and not self.api_keys:
            raise ValueError("sla_source api_key needs api_keys (digest → class)")
        if self.sla_source == "jwt" and self.jwt is None:
            raise ValueError("sla_source jwt needs jwt: {issuer, jwks_path}")
        return self


class ServerTls(_Strict):
    """A TLS server's certificate and key; with client_ca_path, clients must present a certificate that CA
    signed (mutual TLS)."""

    cert_path: str = Field(min_length=1)
    key_path: str = Field(min_length=1)
    client_ca_path: str | None = None


class ClientTls(_Strict):
    """A TLS client: the CA that signed the server's certificate, the name to verify (and send as SNI), and
    optionally its own certificate for mutual TLS."""

    ca_path: str = Field(min_length=1)
    sni: str | None = None
    cert_path: str | None = None
    key_path: str | None = None

    @model_validator(mode="after")
    def _pair(self) -> "ClientTls":
        if (self.cert_path is None) != (self.key_path is None):
            raise ValueError("cert_path and key_path go together (a client certificate needs its key)")
        return self
