"""Compression settings in aigrid.yaml (`compression:`). Pure pydantic: importing this loads no model."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class CompressionSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = False
    # Local directory of the LLMLingua-2 token classifier (no hub downloads at run time).
    model_path: str | None = None
    # Per-request budget for compression; past it the request goes on uncompressed.
    deadline_ms: int = Field(default=1000, ge=10, le=60_000)
