"""A twin scenario file (pydantic): the grid, the clients, the SLOs per class, the arms, the sweep.

Errors name the key and the reason (`ScenarioError`); the CLI prints them and exits non-zero.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from extproc.tools.sim.profiles import ProfileError, load_profiles, make_hardware
from extproc.tools.sites import GridSite
from extproc.tools.twin.arms import ARMS
from extproc.tools.workload.spec import SLA_CLASSES, WorkloadSpec

# A run the twin refuses: more requests than this per run (rate x duration) is "a rate the twin cannot
# reach" in bounded time on one core.
MAX_REQUESTS_PER_RUN = 400_000


class ScenarioError(ValueError):
    """A scenario that cannot run; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)




class Slo(_Strict):
    """Per request: met when TTFT <= ttft_ms and TPOT <= tpot_ms (None: no bound)."""

    ttft_ms: float = Field(gt=0, le=3_600_000)
    tpot_ms: float | None = Field(default=None, gt=0, le=60_000)


def _default_slos() -> dict[str, Slo]:
    return {
        "realtime": Slo(ttft_ms=300, tpot_ms=40),
        "standard": Slo(ttft_ms=1000, tpot_ms=60),
        "batch": Slo(ttft_ms=10_000, tpot_ms=None),
    }


class GoodputRule(_Strict):
    """When a rate counts as served.

    `wilson` (the default): the seeds' runs at a rate are pooled, and the rate passes when, for every
    class with a target (`targets`), the lower end of the `confidence` Wilson interval of its attainment
    is at or above the target. Runs are made long enough that every such class has at least
    `min_class_requests` measured requests at each rate, pooled (`Sweep.max_duration_s` caps that).

    `per_seed` (the rule before): each seed's run passes when at least `overall` of all requests, and
    `realtime` of realtime ones, meet their SLO; goodput is searched per seed and averaged. Kept so the
    change of figures is shown, not hidden (the summary reports both).

    Either way a compressed request whose prompt lost a gold fact misses its SLO."""

    statistic: Literal["wilson", "per_seed"] = "wilson"
    targets: dict[str, float] = Field(default_factory=lambda: {"realtime": 0.99, "standard": 0.90, "batch": 0.90})
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_class_requests: int = Field(default=300, ge=1, le=1_000_000)
    overall: float = Field(default=0.90, gt=0, le=1)
    realtime: float = Field(default=0.99, gt=0, le=1)

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: dict[str, float]) -> dict[str, float]:
        bad = sorted(set(v) - set(SLA_CLASSES))
        if bad:
            raise ValueError(f"unknown SLA class {', '.join(bad)}; classes are {', '.join(SLA_CLASSES)}")
        if any(not 0 < x <= 1 for x in v.values()):
            raise ValueError("every target is a share in (0, 1]")
        if not v:
            raise ValueError("at least one class needs a target")
        return v


class Sweep(_Strict):
    rates: list[float] = Field(min_length=1)  # requests per second, ascending
    bisect_steps: int = Field(default=3, ge=0, le=10)
    seeds: list[int] = Field(default_factory=lambda: [1, 2, 3, 4, 5], min_length=1)
    duration_s: float = Field(default=40.0, gt=0, le=3600)
    # Requests planned before this are warm-up: sent, not measured.
    warmup_s: float = Field(default=5.0, ge=0)
    # After the last arrival, in-flight requests may finish for this long; the rest count as misses.
    drain_s: float = Field(default=30.0, ge=0, le=3600)
    # Longest run at any rate when the Wilson rule lengthens low-rate runs for enough requests per class.
    max_duration_s: float = Field(default=240.0, gt=0, le=3600)

    @field_validator("rates")
    @classmethod
    def _ascending(cls, v: list[float]) -> list[float]:
        if any(r <= 0 for r in v):
            raise ValueError("rates must be > 0")
        if any(b <= a for a, b in zip(v, v[1:])):
            raise ValueError("rates must be strictly ascending")
        return v

    @model_validator(mode="after")
    def _window(self) -> "Sweep":
        if self.warmup_s >= self.duration_s:
            raise ValueError("warmup_s must be < duration_s")
        return self


class Compressor(_Strict):
    # Speed of the coarse step in tokens/s, on the gateway's CPU. Without the measured figures below, the
    # twin charges cost_tokens / speed of CPU (and latency) per compressed request, with no queue.
    coarse_tokens_per_s: float = Field(default=400_000, gt=0)
    # The coarse step as the gateway runs it (`compcost.py`), from figures measured on this machine
    # (`aigrid demo` measures them and sets them): then coarse_tokens_per_s is the whole coarse-only pass
    # with BM25 (segment, rank, select, rebuild), and the same figure is the rewriter's
    # `compression.coarse_tokens_per_s` (its break-even and deadline rule); lexical_tokens_per_s is BM25
    # alone, on the ranker's lexical thread (one, a queue); dense_*_s one pass of the embedding model on
    # its thread (busy: BM25 fallback), with cold / warm sentence vectors (None: no model installed).
    lexical_tokens_per_s: float | None = Field(default=None, gt=0)
    dense_cold_s: float | None = Field(default=None, ge=0)
    dense_warm_s: float | None = Field(default=None, ge=0)
    # The gateway's `compression.ranker` in the compression arms; its default is the gateway's (auto: the
    # embedding model + BM25 for English), whose decisions the twin takes (issue 20).
    ranker: Literal["auto", "bm25", "embedding", "hybrid"] = "auto"

    @property
    def measured(self) -> bool:
        return self.lexical_tokens_per_s is not None


class Scenario(_Strict):
    name: str = "scenario"
    sites: list[GridSite] = Field(min_length=1)
    gateways: int = Field(default=1, ge=1, le=1024)
    # Agents publish every site's load this often; Redis brings it to every gateway this much later.
    report_interval_ms: float = Field(default=250, gt=0, le=60_000)
    redis_delay_ms: float = Field(default=1.5, ge=0, le=10_000)
    # Gateway replicas publish their per-site in-flight counts this often (0: off; aigrid.yaml
    # gateway.in_flight_publish_ms), so that N gateways sharing one map do not herd.
    in_flight_publish_ms: float = Field(default=50, ge=0, le=10_000)
    slo: dict[str, Slo] = Field(default_factory=_default_slos)
    goodput: GoodputRule = GoodputRule()
    workload: WorkloadSpec = WorkloadSpec()
    compressor: Compressor = Compressor()
    arms: list[str] = Field(default_factory=lambda: ["B1", "B2", "R", "C", "R+C"], min_length=1)
    sweep: Sweep
    # Time dilation (`dilation.py`): every engine step takes this many times its modelled time. Set by
    # `dilated()`, which also scales the links, SLOs and rates; the hardware is the only consumer here.
    dilation: float = Field(default=1.0, ge=1, le=1000)
    # Extra aigrid.yaml `policy:` / `compression:` keys for every arm (e.g. headroom, floors).
    policy: dict[str, Any] = Field(default_factory=dict)
    compression: dict[str, Any] = Field(default_factory=dict)

    def per_replica(self) -> "Scenario":
        """The grid as a pod-level router sees it (GIE scores pods): each site of R replicas becomes R sites
        `<name>-<k>` of one replica, same GPU, same link; a one-replica site keeps its name."""
        sites: list[GridSite] = []
        for s in self.sites:
            if s.replicas == 1:
                sites.append(s)
                continue
            sites.extend(s.model_copy(update={"name": f"{s.name}-{k}", "replicas": 1}) for k in range(s.replicas))
        return self.model_copy(update={"sites": sites})

    @field_validator("slo")
    @classmethod
    def _classes(cls, v: dict[str, Slo]) -> dict[str, Slo]:
        unknown = sorted(set(v) - set(SLA_CLASSES))
        if unknown:
            raise ValueError(f"unknown SLA class {', '.join(unknown)}; classes are {', '.join(SLA_CLASSES)}")
        missing = sorted(set(SLA_CLASSES) - set(v))
        if missing:
            raise ValueError(f"every class needs an SLO; missing {', '.join(missing)}")
        return v

    @model_validator(mode="after")
    def _checks(self) -> "Scenario":
        names = [s.name for s in self.sites]
        if len(set(names)) != len(names):
            raise ValueError("sites: names must be unique")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ValueError(f"arms: unknown arm {', '.join(bad)}; known: {', '.join(ARMS)}")
        # An SLO no request can meet: the TTFT bound below the network round trip to the nearest site.
        nearest = min(s.rtt_ms for s in self.sites)
        for cls_, slo in self.slo.items():
            if slo.ttft_ms <= nearest:
                raise ValueError(
                    f"slo.{cls_}.ttft_ms: {slo.ttft_ms:g} ms is impossible: the nearest site is {nearest:g} ms away (round trip)"
                )
        top = self.sweep.rates[-1] * (self.sweep.duration_s + 0.0)
        if top > MAX_REQUESTS_PER_RUN:
            raise ValueError(
                f"sweep.rates: {self.sweep.rates[-1]:g} req/s for {self.sweep.duration_s:g} s is {top:.0f} requests per run, "
                f"more than the twin runs in bounded time ({MAX_REQUESTS_PER_RUN}); lower the rate or the duration"
            )
        return self


def _loc(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_scenario(data: Any, where: str = "scenario") -> Scenario:
    if not isinstance(data, dict):
        raise ScenarioError(f"{where}: a scenario must be a mapping of keys, got {type(data).__name__}")
    try:
        sc = Scenario.model_validate(data)
    except ValidationError as exc:
        lines = [f"{where}: invalid scenario"]
        for e in exc.errors():
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"  {_loc(tuple(e['loc']))}: {msg}")
        raise ScenarioError("\n".join(lines)) from None
    _check_hardware(sc, where)
    return sc


def _check_hardware(sc: Scenario, where: str) -> None:
    prof = load_profiles()
    for i, s in enumerate(sc.sites):
        try:
            make_hardware(prof, s.gpu, s.model, s.gpus_per_replica)
        except ProfileError as exc:
            raise ScenarioError(f"{where}: sites.{i}.gpu/model: {exc}") from None


def load_scenario(path: str | Path, **overrides: Any) -> Scenario:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(f"{p}: cannot read scenario file: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ScenarioError(f"{p}: not valid YAML{at}: {getattr(exc, 'problem', exc)}") from None
    if isinstance(data, dict):
        data = {**data, **{k: v for k, v in overrides.items() if v is not None}}
    return parse_scenario(data, str(p))


REFERENCE_SCENARIO = Path(__file__).with_name("reference.yaml")
# The grids the evaluation tests the policies on besides the reference (docs/evaluation.md).
GRID_SCENARIOS = tuple(sorted((Path(__file__).parent / "grids").glob("*.yaml")))
