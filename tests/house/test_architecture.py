"""docs/architecture.md is a true map: every package it lists exists, every package that exists is listed,
and the import contracts it draws are the ones lint-imports checks."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")


def listed_packages() -> set[str]:
    # The package table's first column: `extproc/<path>/`.
    return set(re.findall(r"^\| `(extproc/[a-z_/]*)/` \|", DOC, flags=re.M))


def existing_packages() -> set[str]:
    return {str(p.parent.relative_to(ROOT)) for p in (ROOT / "extproc").rglob("__init__.py")
            if "__pycache__" not in p.parts} - {"extproc"}


def test_every_listed_package_exists_and_every_package_is_listed():
    listed, existing = listed_packages(), existing_packages()
    assert listed, "no package table found"
    assert sorted(listed - existing) == [], "listed in docs/architecture.md but not a package"
    assert sorted(existing - listed) == [], "a package docs/architecture.md does not list"


def test_the_contracts_drawn_are_the_ones_checked():
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    layers = {tuple(c.get("containers", ["extproc"])): c["layers"] for c in cfg["contracts"]}
    assert layers[("extproc",)] == ["extproc.cli", "extproc.tools", "extproc.agent | extproc.gateway", "extproc.wire"]
    drawn = {
        ("extproc.gateway",): "server → operator | envoyconf → compression → routing → request → loadmap | observe → config",
        ("extproc.gateway.compression",): "rewriter → runtime → core → seam | offline",
        ("extproc.tools",): "stack → twin → loadtest | evalcompress → workload → sim → tokens | percentile | sites",
    }
    for container, arrow in drawn.items():
        assert " → ".join(layers[container]) == arrow
        assert arrow in " ".join(DOC.split()), f"docs/architecture.md does not draw {container}: {arrow}"
