"""Trim upstream CRD files to the OpenAPI v3 schemas of the kinds the deploy/ manifests use.

    python deploy/schemas/trim.py SOURCE.yaml [SOURCE.yaml ...]

Each SOURCE is an upstream CRD file (one or many CustomResourceDefinitions; README.md names where each
came from). For every CRD whose kind is in KINDS, the schema of each listed version is written to
deploy/schemas/<group>/<kind>_<version>.json with the `description` texts removed (they are most of the
size and validate nothing); every other keyword is kept as upstream wrote it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent

# (group, kind) -> versions kept: the ones the manifests under deploy/ are written against.
KINDS: dict[tuple[str, str], tuple[str, ...]] = {
    ("gateway.networking.k8s.io", "GatewayClass"): ("v1",),
    ("gateway.networking.k8s.io", "Gateway"): ("v1",),
    ("gateway.networking.k8s.io", "HTTPRoute"): ("v1",),
    ("gateway.envoyproxy.io", "EnvoyExtensionPolicy"): ("v1alpha1",),
    ("gateway.envoyproxy.io", "BackendTrafficPolicy"): ("v1alpha1",),
    ("gateway.envoyproxy.io", "ClientTrafficPolicy"): ("v1alpha1",),
    ("gateway.envoyproxy.io", "Backend"): ("v1alpha1",),
    ("networking.istio.io", "EnvoyFilter"): ("v1alpha3",),
    ("networking.istio.io", "VirtualService"): ("v1",),
    ("networking.istio.io", "DestinationRule"): ("v1",),
    ("networking.istio.io", "Gateway"): ("v1",),
    ("inference.networking.k8s.io", "InferencePool"): ("v1",),
    ("monitoring.coreos.com", "ServiceMonitor"): ("v1",),
    ("monitoring.coreos.com", "PodMonitor"): ("v1",),
}


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description" or not isinstance(v, str)}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def trim(source: Path) -> list[Path]:
    written: list[Path] = []
    for doc in yaml.safe_load_all(source.read_text(encoding="utf-8")):
        if not isinstance(doc, dict) or doc.get("kind") != "CustomResourceDefinition":
            continue
        spec = doc["spec"]
        key = (spec["group"], spec["names"]["kind"])
        if key not in KINDS:
            continue
        for version in spec["versions"]:
            if version["name"] not in KINDS[key]:
                continue
            schema = _strip(version["schema"]["openAPIV3Schema"])
            out = HERE / spec["group"] / f"{spec['names']['kind'].lower()}_{version['name']}.json"
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n", encoding="utf-8")
            written.append(out)
    return written


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    for src in argv:
        for out in trim(Path(src)):
            print(f"{src} -> {out.relative_to(HERE)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
