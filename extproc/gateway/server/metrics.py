"""Gateway metrics (Prometheus). Label sets are small and bounded: sites come from config, steps and
reasons from fixed vocabularies.

The metrics a request touches on its way through the processor (messages, phase times, decisions, active
streams, ...) are `Hot*` metrics: a plain number per label set, written only by the event loop's thread
and read by `HotCollector` at scrape time, under the same names, types and labels prometheus_client's own
classes would export. prometheus_client takes a lock and does Python bookkeeping on every observation:
measured on this box (hot loop, best of 5), `Counter.inc` 0.58 µs, `Gauge.inc` 0.66 µs, a 12-bucket
`Histogram.observe` 2.1 µs, against about 0.1-0.25 µs here, and a body-path request makes about ten.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString


class HotCount:
    """One label set's value (a counter's or a gauge's). Single writer: the event loop's thread."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount

    def dec(self, amount: float = 1) -> None:
        self.value -= amount


class HotCounter:
    """A labelled counter (or, with `gauge=True`, a gauge) for the request path: `labels(...)` returns the
    label set's `HotCount`, kept for good, so callers resolve it once and then pay one addition."""

    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...] = (), *, gauge: bool = False) -> None:
        self.name, self.doc, self.labelnames, self.gauge = name, doc, labelnames, gauge
        self.children: dict[tuple[str, ...], HotCount] = {}
        if not labelnames:
            self._only = self.labels()

    def labels(self, *values: str) -> HotCount:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values!r}")
            child = self.children[values] = HotCount()
        return child

    # Unlabelled use, as prometheus_client's own classes allow.
    def inc(self, amount: float = 1) -> None:
        self._only.value += amount

    def dec(self, amount: float = 1) -> None:
        self._only.value -= amount

    def family(self) -> Metric:
        fam = (GaugeMetricFamily if self.gauge else CounterMetricFamily)(self.name, self.doc, labels=list(self.labelnames))
        for values, child in list(self.children.items()):
            fam.add_metric(list(values), child.value)
        return fam


class HotBuckets:
    """One label set of a `HotHistogram`: a count per bucket (not cumulative; the last is +Inf) and the sum."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, amount: float) -> None:
        # bisect_left: the first bound >= amount, i.e. Prometheus' `le` bucket.
        self.counts[bisect_left(self.bounds, amount)] += 1
        self.sum += amount


class HotHistogram:
    def __init__(self, name: str, doc: str, labelnames: tuple[str, ...], buckets: tuple[float, ...]) -> None:
        self.name, self.doc, self.labelnames = name, doc, labelnames
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self.children: dict[tuple[str, ...], HotBuckets] = {}

    def labels(self, *values: str) -> HotBuckets:
        child = self.children.get(values)
        if child is None:
            if len(values) != len(self.labelnames):
                raise ValueError(f"{self.name}: labels {self.labelnames}, got {values!r}")
            child = self.children[values] = HotBuckets(self.bounds)
        return child

    def family(self) -> Metric:
        fam = HistogramMetricFamily(self.name, self.doc, labels=list(self.labelnames))
        les = [floatToGoString(b) for b in self.bounds] + ["+Inf"]
        for values, child in list(self.children.items()):
            counts, total = list(child.counts), child.sum
            cumulative, run = [], 0
            for le, n in zip(les, counts):
                run += n
                cumulative.append((le, run))
            fam.add_metric(list(values), cumulative, total)
        return fam


class HotCollector:
    """Exports `Hot*` metrics at scrape time (a custom collector on the gateway's registry)."""

    def __init__(self, metrics: list[HotCounter | HotHistogram]) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        for m in self._metrics:
            yield m.family()

    def describe(self) -> Iterator[Metric]:
        return iter(())

from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.request.chains import ResponseChains


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        hot: list[HotCounter | HotHistogram] = []

        def keep(m):  # type: ignore[no-untyped-def]
            hot.append(m)
            return m

        # The request path's metrics (see the module's docstring).
        self.decisions = keep(HotCounter("aigrid_decisions", "Routing decisions", ("site", "step", "sla")))
        self.passthrough = keep(HotCounter(
            "aigrid_passthrough", "Requests whose body was not inspected, by reason", ("reason",)
        ))
        self.errors = Counter(
            "aigrid_processor_errors", "Exceptions inside the processor (answered continue-unchanged)", ["phase"], registry=r
        )
        self.rewrites = Counter("aigrid_rewrites", "Bodies rewritten by the rewriter", registry=r)
        self.holds = Counter(
            "aigrid_holds", "Decisions that held a request back to decide again later (slo_slack hold_*), by class",
            ["sla"], registry=r,
        )
        self.hold_seconds = Histogram(
            "aigrid_hold_seconds", "Time a held request waited in all before it was routed",
            buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10), registry=r,
        )
        self.rewrite_skips = Counter(
            "aigrid_rewrite_skips", "Bodies left as they were by the rewriter, by reason", ["reason"], registry=r
        )
        self.prompt_tokens_before = keep(HotCounter(
            "aigrid_prompt_tokens_before", "Estimated prompt tokens of inspected requests"
        ))
        self.rewrite_seconds = Histogram(
            "aigrid_rewrite_seconds", "Time spent in the rewriter per request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )
        self.step_seconds = keep(HotHistogram(
            "aigrid_routing_step_seconds", "Time one routing step took (sampled decisions)", ("step",),
            (1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3),
        ))
        self.messages = keep(HotCounter("aigrid_processor_messages", "ext_proc messages received, by phase", ("phase",)))
        self.site_in_flight = Gauge(
            "aigrid_site_in_flight", "Requests sent to the site since its last report, by this gateway (self) or its replicas (peers)",
            ["site", "source"], registry=r,
        )
        self.gateway_answers = Counter(
            "aigrid_gateway_answers", "Requests the gateway answered itself (model list, unknown model)", ["kind"], registry=r
        )
        self.streams = keep(HotCounter("aigrid_active_streams", "ext_proc streams in progress", gauge=True))
        self.redis_connected = Gauge("aigrid_loadmap_connected", "1 while the load map reader is connected to Redis", registry=r)
        self.site_pressure = Gauge("aigrid_site_pressure", "Site pressure as the policy sees it (-1 unknown)", ["site"], registry=r)
        self.site_drained = Gauge("aigrid_site_drained", "1 when the site is drained", ["site"], registry=r)
        self.site_spilling = Gauge("aigrid_site_spilling", "1 while the site is spilling traffic (hysteresis state)", ["site"], registry=r)
        self.default_speed = keep(HotCounter(
            "aigrid_cost_model_default_speed",
            "Cost-model decisions that used the stated default speed for a site with no sites[].speed", ("site",),
        ))
        self.decided_by = keep(HotCounter(
            "aigrid_cost_model_decided_by",
            "Cost-model decisions by the term that separated the chosen site from the runner-up", ("term",),
        ))
        self.decision_reasons = keep(HotCounter(
            "aigrid_decision_reasons", "Routing decisions by site, step and reason class (extproc.gateway.observe.names.reason_class)",
            ("site", "step", "reason_class"),
        ))
        self.phase_seconds = keep(HotHistogram(
            "aigrid_processor_phase_seconds", "Processor time per ext_proc message, by phase (request_headers, request_body, ...)",
            ("phase",), (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5),
        ))
        r.register(HotCollector(hot))


class LoadMapCollector:
    """Read at scrape time from the map reader, so they are exact and cost the request path nothing:
    report counters (real counters: they only grow) and the age of each site's newest report."""

    def __init__(
        self,
        counts: Callable[[], tuple[int, int]],
        snapshot: Callable[[], LoadSnapshot],
        sites: list[str],
        clock: Callable[[], float] = time.monotonic,
        refused: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self._counts = counts
        self._refused = refused
        self._snapshot = snapshot
        self._sites = sites
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        accepted, rejected = self._counts()
        yield CounterMetricFamily("aigrid_loadmap_reports_accepted", "Load reports accepted since start", value=accepted)
        yield CounterMetricFamily("aigrid_loadmap_reports_rejected", "Load reports rejected since start", value=rejected)
        refused = CounterMetricFamily(
            "aigrid_loadmap_reports_refused",
            "Load reports refused because their channel or key does not belong to the site they name "
            "(wrong_channel, wrong_key, not_its_key); also counted in aigrid_loadmap_reports_rejected",
            labels=["reason"],
        )
        for reason, n in sorted(self._refused().items()):
            refused.add_metric([reason], n)
        yield refused
        age = GaugeMetricFamily(
            "aigrid_site_report_age_seconds", "Age of the site's newest load report as this gateway sees it (-1: none)",
            labels=["site"],
        )
        snap = self._snapshot()
        now = self._clock()
        for site in self._sites:
            load = snap.sites.get(site)
            age.add_metric([site], -1.0 if load is None else load.age_s(now))
        yield age

    def describe(self) -> Iterator[Metric]:
        return iter(())


class ResponseChainsCollector:
    """The Responses API chain table (`extproc.gateway.request.chains`), read at scrape time."""

    def __init__(self, chains: ResponseChains) -> None:
        self._chains = chains

    def collect(self) -> Iterator[Metric]:
        c = self._chains
        yield CounterMetricFamily(
            "aigrid_response_chains_learned", "Response ids the response side tied to their conversation", value=c.learned
        )
        lookups = CounterMetricFamily(
            "aigrid_response_chains_lookups",
            "previous_response_id lookups: found (the chain's key) or missed (routed by the id itself)", labels=["result"],
        )
        lookups.add_metric(["found"], c.found)
        lookups.add_metric(["missed"], c.missed)
        yield lookups
        yield GaugeMetricFamily("aigrid_response_chains_entries", "Response ids held in the chain table", value=len(c))

    def describe(self) -> Iterator[Metric]:
        return iter(())
