"""Fixtures shared by the compression tests (model side and policy side)."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc.gateway.compression.offline import force_offline, install_tiktoken_cache

force_offline()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny seeded LLMLingua-2-style token classifier (2 labels) in a directory whose path contains
    `bert-base-multilingual-cased`, built once per session in a few seconds. Loads with both our
    compressor and llmlingua's PromptCompressor(use_llmlingua2=True)."""
    from extproc.tools.evalcompress.tinymodel import build_tiny_model

    install_tiktoken_cache()
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-bert-base-multilingual-cased")
