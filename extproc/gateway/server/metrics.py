"""Gateway metrics (Prometheus). Label sets are small and bounded: sites come from config, steps and
reasons from fixed vocabularies."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.request.chains import ResponseChains


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.decisions = Counter(
            "aigrid_decisions", "Routing decisions", ["site", "step", "sla"], registry=r
        )
        self.passthrough = Counter(
            "aigrid_passthrough", "Requests whose body was not inspected, by reason", ["reason"], registry=r
        )
        self.errors = Counter(
            "aigrid_processor_errors", "Exceptions inside the processor (answered continue-unchanged)", ["phase"], registry=r
        )
        self.rewrites = Counter("aigrid_rewrites", "Bodies rewritten by the rewriter", registry=r)
        self.rewrite_skips = Counter(
            "aigrid_rewrite_skips", "Bodies left as they were by the rewriter, by reason", ["reason"], registry=r
        )
        self.prompt_tokens_before = Counter(
            "aigrid_prompt_tokens_before", "Estimated prompt tokens of inspected requests", registry=r
        )
        self.rewrite_seconds = Histogram(
            "aigrid_rewrite_seconds", "Time spent in the rewriter per request",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5), registry=r,
        )
        self.step_seconds = Histogram(
            "aigrid_routing_step_seconds", "Time one routing step took (sampled decisions)", ["step"],
            buckets=(1e-6, 2.5e-6, 5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 1e-3), registry=r,
        )
        self.messages = Counter(
            "aigrid_processor_messages", "ext_proc messages received, by phase", ["phase"], registry=r
        )
        self.site_in_flight = Gauge(
            "aigrid_site_in_flight", "Requests sent to the site since its last report, by this gateway (self) or its replicas (peers)",
            ["site", "source"], registry=r,
        )
        self.gateway_answers = Counter(
            "aigrid_gateway_answers", "Requests the gateway answered itself (model list, unknown model)", ["kind"], registry=r
        )
        self.streams = Gauge("aigrid_active_streams", "ext_proc streams in progress", registry=r)
        self.redis_connected = Gauge("aigrid_loadmap_connected", "1 while the load map reader is connected to Redis", registry=r)
        self.site_pressure = Gauge("aigrid_site_pressure", "Site pressure as the policy sees it (-1 unknown)", ["site"], registry=r)
        self.site_drained = Gauge("aigrid_site_drained", "1 when the site is drained", ["site"], registry=r)
        self.site_spilling = Gauge("aigrid_site_spilling", "1 while the site is spilling traffic (hysteresis state)", ["site"], registry=r)
        self.default_speed = Counter(
            "aigrid_cost_model_default_speed_total",
            "Cost-model decisions that used the stated default speed for a site with no sites[].speed", ["site"], registry=r,
        )
        self.decided_by = Counter(
            "aigrid_cost_model_decided_by_total",
            "Cost-model decisions by the term that separated the chosen site from the runner-up", ["term"], registry=r,
        )
        self.decision_reasons = Counter(
            "aigrid_decision_reasons", "Routing decisions by site, step and reason class (extproc.gateway.observe.names.reason_class)",
            ["site", "step", "reason_class"], registry=r,
        )
        self.phase_seconds = Histogram(
            "aigrid_processor_phase_seconds", "Processor time per ext_proc message, by phase (request_headers, request_body, ...)",
            ["phase"], buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.25, 1, 2.5), registry=r,
        )


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
