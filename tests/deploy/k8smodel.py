"""Plain-data views of rendered Kubernetes objects for the deployment tests: pod templates, containers,
the references they make, and NetworkPolicy evaluation (who may reach which pod on which port)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Iterator

WORKLOADS = ("Deployment", "DaemonSet", "StatefulSet", "Job")
VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


@dataclass(frozen=True)
class Pod:
    """A pod template of a workload: where it runs and what it is."""

    workload: dict[str, Any]
    namespace: str
    labels: dict[str, str]
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return f"{self.workload['kind']}/{self.workload['metadata']['name']}"

    @property
    def containers(self) -> list[dict[str, Any]]:
        return list(self.spec.get("initContainers") or []) + list(self.spec["containers"])


def pods(objs: list[dict[str, Any]]) -> list[Pod]:
    out = []
    for o in objs:
        if o["kind"] in WORKLOADS:
            t = o["spec"]["template"]
            out.append(Pod(o, o["metadata"].get("namespace", "default"), dict(t["metadata"].get("labels") or {}), t["spec"]))
    return out


def by_kind(objs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def references(pod: Pod) -> Iterator[tuple[str, str, bool]]:
    """(kind, name, optional) for every object the pod template refers to."""
    yield "ServiceAccount", pod.spec.get("serviceAccountName", "default"), False
    for v in pod.spec.get("volumes") or []:
        if "configMap" in v:
            yield "ConfigMap", v["configMap"]["name"], bool(v["configMap"].get("optional"))
        if "secret" in v:
            yield "Secret", v["secret"]["secretName"], bool(v["secret"].get("optional"))
        if "persistentVolumeClaim" in v:
            yield "PersistentVolumeClaim", v["persistentVolumeClaim"]["claimName"], False
    for c in pod.containers:
        for e in c.get("env") or []:
            src = e.get("valueFrom") or {}
            if "secretKeyRef" in src:
                yield "Secret", src["secretKeyRef"]["name"], bool(src["secretKeyRef"].get("optional"))
            if "configMapKeyRef" in src:
                yield "ConfigMap", src["configMapKeyRef"]["name"], bool(src["configMapKeyRef"].get("optional"))
        for ef in c.get("envFrom") or []:
            for kind, key in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if key in ef:
                    yield kind, ef[key]["name"], bool(ef[key].get("optional"))


def secret_keys_used(pod: Pod, secret: str) -> set[str]:
    keys = set()
    for c in pod.containers:
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("secretKeyRef")
            if ref and ref["name"] == secret:
                keys.add(ref["key"])
    return keys


# ---- selectors and NetworkPolicy semantics ------------------------------------------------------------

def selector_matches(selector: dict[str, Any] | None, labels: dict[str, str]) -> bool:
    """A LabelSelector (matchLabels + matchExpressions In/NotIn/Exists/DoesNotExist); {} matches all."""
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


@dataclass(frozen=True)
class Peer:
    """A traffic source: a pod's labels and its namespace's labels."""

    labels: dict[str, str]
    namespace: str

    @property
    def namespace_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace}


def _peer_matches(rule_peer: dict[str, Any], policy_ns: str, src: Peer) -> bool:
    if "ipBlock" in rule_peer:
        return False  # no pod traffic is modelled as coming from an IP block
    ns_sel = rule_peer.get("namespaceSelector")
    pod_sel = rule_peer.get("podSelector")
    ns_ok = selector_matches(ns_sel, src.namespace_labels) if ns_sel is not None else src.namespace == policy_ns
    pod_ok = selector_matches(pod_sel, src.labels) if pod_sel is not None else True
    return ns_ok and pod_ok


def _port_matches(rule_ports: list[dict[str, Any]] | None, port: int, named_ports: dict[str, int]) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        want = p.get("port")
        if want is None or want == port or (isinstance(want, str) and named_ports.get(want) == port):
            return True
    return False


def ingress_allowed(policies: list[dict[str, Any]], dst: Pod, port: int, src: Peer) -> bool:
    """Whether `src` may open a connection to pod `dst` on `port` under these NetworkPolicies
    (ingress only; a pod no policy selects is open, as in Kubernetes)."""
    named_ports = {p["name"]: p["containerPort"] for c in dst.containers for p in c.get("ports") or [] if "name" in p}
    selecting = [
        np for np in policies
        if np["metadata"].get("namespace") == dst.namespace
        and "Ingress" in (np["spec"].get("policyTypes") or ["Ingress"])
        and selector_matches(np["spec"]["podSelector"], dst.labels)
    ]
    if not selecting:
        return True
    for np in selecting:
        for rule in np["spec"].get("ingress") or []:
            peers = rule.get("from")
            peer_ok = True if not peers else any(_peer_matches(pr, dst.namespace, src) for pr in peers)
            if peer_ok and _port_matches(rule.get("ports"), port, named_ports):
                return True
    return False
