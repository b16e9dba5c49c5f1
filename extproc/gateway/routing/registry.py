"""Step types registered by name, and profiles built from their config (`routing.profiles` in aigrid.yaml).

A step type is a class registered with `@register("name")`; its parameters are a pydantic model (its
nested `Params`, extra keys refused), so a wrong parameter is refused at start with the key and the
reason. Built-in steps live in `extproc.gateway.routing.steps`; importing this module registers them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from extproc.gateway.config.schema import GatewayConfig, ProfileSpec, StepSpec
from extproc.gateway.routing.framework import Picker, Profile, Rule, Scorer, Step, StepKind


class StepParams(BaseModel):
    """Base of every step's `Params`: unknown keys are refused, values are frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class NoParams(StepParams):
    """A step without parameters."""


class ProfileError(ValueError):
    """A profile that cannot be built: `key` is its dotted path in aigrid.yaml."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True, slots=True)
class StepEnv:
    """What a step's factory may read besides its own parameters."""

    config: GatewayConfig


@dataclass(frozen=True, slots=True)
class StepType:
    name: str
    kind: StepKind
    cls: type[Step]
    params: type[BaseModel]


REGISTRY: dict[str, StepType] = {}
S = TypeVar("S", bound=type[Step])


def register(name: str) -> Callable[[S], S]:
    """Class decorator: make a step type available to profiles under `name`."""

    def deco(cls: S) -> S:
        if name in REGISTRY:
            raise ValueError(f"step type {name!r} registered twice")
        params = getattr(cls, "Params", NoParams)
        if not (isinstance(params, type) and issubclass(params, StepParams)):
            raise TypeError(f"step type {name!r}: Params must subclass StepParams")
        cls.type_name = name
        REGISTRY[name] = StepType(name, cls.kind, cls, params)
        return cls

    return deco


def _spec(ref: str | StepSpec) -> StepSpec:
    return StepSpec(type=ref) if isinstance(ref, str) else ref


def build_step(ref: str | StepSpec, kind: StepKind, key: str, env: StepEnv) -> Step:
    spec = _spec(ref)
    st = REGISTRY.get(spec.type)
    if st is None:
        known = ", ".join(sorted(n for n, t in REGISTRY.items() if t.kind is kind))
        raise ProfileError(key, f"unknown {kind.value} type {spec.type!r} (known: {known})")
    if st.kind is not kind:
        raise ProfileError(key, f"{spec.type!r} is a {st.kind.value}, not a {kind.value}")
    if spec.weight is not None and kind is not StepKind.scorer:
        raise ProfileError(key, f"weight applies to scorers only ({spec.type!r} is a {kind.value})")
    try:
        params = st.params.model_validate(spec.params)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"])
        raise ProfileError(f"{key}.params{'.' + loc if loc else ''}", first["msg"]) from None
    try:
        step = st.cls(spec.name or spec.type, params, env)  # type: ignore[call-arg]
    except ValueError as exc:
        raise ProfileError(f"{key}.params", str(exc)) from None
    if isinstance(step, Scorer):
        step.weight = 1.0 if spec.weight is None else spec.weight
    return step


DEFAULT_FILTERS: tuple[str, ...] = ("not_drained", "not_unhealthy", "known_load")


def build_profile(name: str, spec: ProfileSpec, config: GatewayConfig, key: str | None = None) -> Profile:
    """A profile from its spec. Refuses (ProfileError, naming the key) unknown steps, wrong parameters,
    weights outside scorers, duplicate instance names, and profiles that may end without a decision."""
    key = key or f"routing.profiles.{name}"
    env = StepEnv(config)
    filters_ref = list(DEFAULT_FILTERS) if spec.filters is None else spec.filters
    filters = [build_step(r, StepKind.filter, f"{key}.filters.{i}", env) for i, r in enumerate(filters_ref)]
    rules = [build_step(r, StepKind.rule, f"{key}.rules.{i}", env) for i, r in enumerate(spec.rules)]
    estimators = [build_step(r, StepKind.estimator, f"{key}.estimators.{i}", env) for i, r in enumerate(spec.estimators)]
    scorers = [build_step(r, StepKind.scorer, f"{key}.scorers.{i}", env) for i, r in enumerate(spec.scorers)]
    picker = None if spec.picker is None else build_step(spec.picker, StepKind.picker, f"{key}.picker", env)
    if scorers and picker is None:
        picker = build_step("max_score", StepKind.picker, f"{key}.picker", env)
    uses_pred = isinstance(picker, Picker) and picker.uses_predictions
    if uses_pred and not estimators:
        raise ProfileError(f"{key}.picker", f"{picker.type_name!r} chooses from predictions: add estimators (e.g. ttft_link, ttft_queue)")
    if estimators and not uses_pred:
        raise ProfileError(f"{key}.estimators", "estimators need a picker that reads predictions (e.g. slo_slack)")
    if picker is None and not (rules and isinstance(rules[-1], Rule) and rules[-1].always_decides):
        raise ProfileError(key, "no step always decides: add a picker (e.g. max_score) or end with a rule that always decides")
    profile = Profile(name, filters, rules, scorers, picker, estimators)  # type: ignore[arg-type]
    names = [s.name for s in profile.steps]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ProfileError(key, f"step names must be unique in a profile; repeated: {', '.join(dup)} (give one a `name`)")
    return profile


def profile_specs(config: GatewayConfig) -> Mapping[str, ProfileSpec]:
    """Built-in profiles, overridden or extended by the config's own."""
    from extproc.gateway.routing.profiles import BUILTIN_PROFILES  # noqa: PLC0415 (profiles imports the steps)

    return {**BUILTIN_PROFILES, **config.routing.profiles}


def active_profile_name(config: GatewayConfig) -> str:
    return config.active_profile


def build_active_profile(config: GatewayConfig, name: str | None = None) -> Profile:
    specs = profile_specs(config)
    name = name or active_profile_name(config)
    if name not in specs:
        raise ProfileError("routing.profile", f"unknown profile {name!r} (known: {', '.join(sorted(specs))})")
    return build_profile(name, specs[name], config)


def check_profiles(config: GatewayConfig) -> None:
    """Build every configured profile once (start-up check): any error names its key."""
    for name, spec in config.routing.profiles.items():
        build_profile(name, spec, config)
    build_active_profile(config)


# Register the built-in steps (their modules import this one for `register`).
from extproc.gateway.routing import steps as _steps  # noqa: E402,F401
