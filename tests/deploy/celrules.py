"""The CEL rules of a CRD's schema (`x-kubernetes-validations`), evaluated on a custom resource with
cel-python, the way the API server applies them on create: the schema's `default`s are filled in first
(structural defaulting runs before validation), then every rule of every schema node the resource has a
value for is evaluated with `self` bound to that value (each item of a list, each value of a map).
Transition rules (those reading `oldSelf`) apply only to updates and are not evaluated; a rule that uses
a function cel-python does not have (Kubernetes' own CEL libraries: `isURL`, `quantity`, `ip`, ...) is
reported as not evaluated, with the error, never as held."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from functools import cache
from typing import Any

import celpy

_ENV = celpy.Environment()


@dataclass(frozen=True)
class RuleOutcome:
    path: str  # where in the resource, e.g. spec/rules/0/timeouts
    rule: str
    outcome: str  # "held" | "violated" | "transition" | "not evaluated"
    detail: str = ""


@cache
def _program(rule: str):  # type: ignore[no-untyped-def]
    return _ENV.program(_ENV.compile(rule))


def _apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _apply_defaults(sub, value[key])
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in list(value):
                if key not in (schema.get("properties") or {}):
                    value[key] = _apply_defaults(extra, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_apply_defaults(schema["items"], v) for v in value]
    return value


def _evaluate(rule: str, value: Any) -> tuple[str, str]:
    if "oldSelf" in rule:
        return "transition", "update-only (reads oldSelf)"
    try:
        result = _program(rule).evaluate({"self": celpy.json_to_cel(value)})
    except Exception as exc:  # cel-python raises for unknown functions and type errors alike
        return "not evaluated", f"{type(exc).__name__}: {exc}"[:200]
    if isinstance(result, celpy.CELEvalError):
        return "not evaluated", f"CELEvalError: {result}"[:200]
    if isinstance(result, celpy.celtypes.BoolType):
        return ("held", "") if bool(result) else ("violated", "")
    return "not evaluated", f"not a bool: {type(result).__name__}"


def _walk(schema: dict[str, Any], value: Any, path: str, out: list[RuleOutcome]) -> None:
    for r in schema.get("x-kubernetes-validations") or []:
        outcome, detail = _evaluate(r["rule"], value)
        if outcome == "violated":
            detail = r.get("message") or r.get("messageExpression") or ""
        out.append(RuleOutcome(path or "(top)", r["rule"], outcome, detail))
    if isinstance(value, dict):
        props = schema.get("properties") or {}
        for key, v in value.items():
            if key in props:
                _walk(props[key], v, f"{path}/{key}" if path else key, out)
            elif isinstance(schema.get("additionalProperties"), dict):
                _walk(schema["additionalProperties"], v, f"{path}/{key}" if path else key, out)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, v in enumerate(value):
            _walk(schema["items"], v, f"{path}/{i}", out)


def rule_outcomes(schema: dict[str, Any], obj: dict[str, Any]) -> list[RuleOutcome]:
    """Every CEL rule the resource reaches, with its outcome (the resource itself is not changed)."""
    value = _apply_defaults(schema, copy.deepcopy(obj))
    out: list[RuleOutcome] = []
    _walk(schema, value, "", out)
    return out


def schema_rules(schema: Any) -> int:
    """How many CEL rules a schema holds in all."""
    if isinstance(schema, dict):
        return len(schema.get("x-kubernetes-validations") or []) + sum(schema_rules(v) for v in schema.values())
    if isinstance(schema, list):
        return sum(schema_rules(v) for v in schema)
    return 0
