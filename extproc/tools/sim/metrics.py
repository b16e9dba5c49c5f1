"""Prometheus exposition of a simulated site, under the names production exporters use.

* vLLM (``/metrics`` of ``vllm serve``): ``vllm:num_requests_running``, ``vllm:num_requests_waiting``,
  ``vllm:kv_cache_usage_perc`` and its older name ``vllm:gpu_cache_usage_perc`` (a 0..1 fraction despite
  the name, as in vLLM), token counters, prefix-cache ``vllm:prefix_cache_queries`` /
  ``vllm:prefix_cache_hits`` (tokens), TTFT / inter-token / end-to-end / queue-time histograms. One
  label set per replica: ``model_name`` and ``engine`` (the replica index), as vLLM labels its engines.
* DCGM exporter (``dcgm-exporter``, normally its own port 9400): ``DCGM_FI_DEV_GPU_UTIL`` (percent),
  ``DCGM_FI_DEV_FB_USED`` / ``DCGM_FI_DEV_FB_FREE`` (MiB), one series per simulated GPU with the
  exporter's labels (``gpu``, ``UUID``, ``device``, ``modelName``, ``Hostname``). Served on ``/metrics``
  with the rest and alone on ``/metrics/dcgm`` for scrapers configured like a separate exporter.
* The simulator's own health: ``aigrid_sim_step_lateness_seconds`` (how late each step's tokens were
  released versus the modelled time), ``aigrid_sim_clock_slip_seconds_total`` (time given up when the
  process fell too far behind to catch up), steps, modelled busy time, and ``aigrid_sim_info``.

The engine keeps plain counters (``stats.py``); this collector reads them at scrape time, so the hot
path never touches ``prometheus_client`` locks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from .profiles import MIB
from .stats import Hist

if TYPE_CHECKING:  # pragma: no cover
    from .server import SimSite

DCGM_NAMES = ("DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE")


def _hist(fam: HistogramMetricFamily, labels: list[str], h: Hist) -> None:
    fam.add_metric(labels, buckets=h.cumulative(), sum_value=h.sum)


class VllmCollector(Collector):
    def __init__(self, site: "SimSite") -> None:
        self.site = site

    def collect(self) -> Iterator[Metric]:
        site = self.site
        model = site.served_model_name
        lbl = ["model_name", "engine"]
        running = GaugeMetricFamily("vllm:num_requests_running", "Number of requests in model execution batches.", labels=lbl)
        waiting = GaugeMetricFamily("vllm:num_requests_waiting", "Number of requests waiting to be processed.", labels=lbl)
        kv = GaugeMetricFamily("vllm:kv_cache_usage_perc", "KV-cache usage. 1 means 100 percent usage.", labels=lbl)
        kv_old = GaugeMetricFamily("vllm:gpu_cache_usage_perc", "GPU KV-cache usage. 1 means 100 percent usage (deprecated name).", labels=lbl)
        prompt = CounterMetricFamily("vllm:prompt_tokens", "Number of prefill tokens processed.", labels=lbl)
        gen = CounterMetricFamily("vllm:generation_tokens", "Number of generation tokens processed.", labels=lbl)
        pc_queries = CounterMetricFamily("vllm:prefix_cache_queries", "Prefix cache queries, in terms of number of queried tokens.", labels=lbl)
        pc_hits = CounterMetricFamily("vllm:prefix_cache_hits", "Prefix cache hits, in terms of number of cached tokens.", labels=lbl)
        preempt = CounterMetricFamily("vllm:num_preemptions", "Cumulative number of preemption from the engine.", labels=lbl)
        success = CounterMetricFamily("vllm:request_success", "Count of successfully processed requests.", labels=[*lbl, "finished_reason"])
        ttft = HistogramMetricFamily("vllm:time_to_first_token_seconds", "Histogram of time to first token in seconds.", labels=lbl)
        itl = HistogramMetricFamily("vllm:inter_token_latency_seconds", "Histogram of inter-token latency in seconds.", labels=lbl)
        tpot = HistogramMetricFamily("vllm:time_per_output_token_seconds", "Histogram of time per output token in seconds (per token, legacy name).", labels=lbl)
        e2e = HistogramMetricFamily("vllm:e2e_request_latency_seconds", "Histogram of e2e request latency in seconds.", labels=lbl)
        queue = HistogramMetricFamily("vllm:request_queue_time_seconds", "Histogram of time spent in WAITING phase for request.", labels=lbl)
        cache_info = GaugeMetricFamily(
            "vllm:cache_config_info", "Information of the LLMEngine CacheConfig",
            labels=["block_size", "num_gpu_blocks", "gpu_memory_utilization", "enable_prefix_caching", "engine"],
        )
        late = HistogramMetricFamily("aigrid_sim_step_lateness_seconds", "How late each simulated step released its tokens versus the modelled time.", labels=["engine"])
        slip = CounterMetricFamily("aigrid_sim_clock_slip_seconds", "Wall time the simulator gave up after falling behind by more than its slip threshold.", labels=["engine"])
        steps = CounterMetricFamily("aigrid_sim_steps", "Engine steps simulated.", labels=["engine"])
        busy = CounterMetricFamily("aigrid_sim_model_busy_seconds", "Modelled GPU-busy seconds (sum of step durations).", labels=["engine"])
        for rep in site.replicas:
            core = rep.core
            st = core.stats
            v = [model, str(rep.index)]
            running.add_metric(v, core.num_running)
            waiting.add_metric(v, core.num_waiting + rep.inbound)
            kv.add_metric(v, core.kv_usage)
            kv_old.add_metric(v, core.kv_usage)
            prompt.add_metric(v, st.prompt_tokens)
            gen.add_metric(v, st.generation_tokens)
            preempt.add_metric(v, st.preemptions)
            pc_queries.add_metric(v, st.prefix_cache_queries)
            pc_hits.add_metric(v, st.prefix_cache_hits)
            for reason, n in st.finished.items():
                success.add_metric([*v, reason], n)
            _hist(ttft, v, st.ttft)
            _hist(itl, v, st.itl)
            _hist(tpot, v, st.itl)
            _hist(e2e, v, st.e2e)
            _hist(queue, v, st.queue)
            hw = site.hw
            cache_info.add_metric(
                [str(hw.engine.block_size), str(hw.num_blocks), str(hw.engine.gpu_memory_utilization),
                 str(core.prefix_caching), str(rep.index)], 1.0
            )
            e = [str(rep.index)]
            _hist(late, e, rep.lateness)
            slip.add_metric(e, rep.slip_seconds)
            steps.add_metric(e, st.steps)
            busy.add_metric(e, st.busy_seconds)
        yield from (running, waiting, kv, kv_old, prompt, gen, pc_queries, pc_hits, preempt, success, ttft, itl, tpot, e2e, queue, cache_info)
        yield from (late, slip, steps, busy)
        info = GaugeMetricFamily(
            "aigrid_sim_info", "Simulated site description (value is always 1).",
            labels=["site", "gpu", "model", "gpus_per_replica", "replicas", "speed_factor", "link_delay_ms"],
        )
        c = site.config
        info.add_metric(
            [c.name, site.hw.gpu.key, site.hw.model.key, str(site.hw.tp), str(len(site.replicas)),
             repr(float(c.speed_factor)), repr(float(c.link_delay_ms))],
            1.0,
        )
        yield info


class DcgmCollector(Collector):
    def __init__(self, site: "SimSite") -> None:
        self.site = site

    def collect(self) -> Iterator[Metric]:
        site = self.site
        lbl = ["gpu", "UUID", "device", "modelName", "Hostname"]
        util = GaugeMetricFamily("DCGM_FI_DEV_GPU_UTIL", "GPU utilization (in %).", labels=lbl)
        used = GaugeMetricFamily("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", labels=lbl)
        free = GaugeMetricFamily("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", labels=lbl)
        hw = site.hw
        total_mib = hw.gpu.memory_bytes / MIB
        used_mib = min(total_mib, hw.fb_used_bytes_per_gpu / MIB)
        gpu_index = 0
        for rep in site.replicas:
            u = rep.gpu_util_percent()
            for _ in range(hw.tp):
                v = [
                    str(gpu_index),
                    f"GPU-sim-{site.config.name}-{gpu_index:04d}",
                    f"nvidia{gpu_index}",
                    hw.gpu.product,
                    site.config.name,
                ]
                util.add_metric(v, round(u))
                used.add_metric(v, round(used_mib))
                free.add_metric(v, round(total_mib - used_mib))
                gpu_index += 1
        yield from (util, used, free)


def build_registries(site: "SimSite") -> tuple[CollectorRegistry, CollectorRegistry]:
    """(everything, DCGM only). Separate registries per site: several sites share one process."""
    everything = CollectorRegistry(auto_describe=False)
    dcgm_only = CollectorRegistry(auto_describe=False)
    everything.register(VllmCollector(site))
    dcgm = DcgmCollector(site)
    everything.register(dcgm)
    dcgm_only.register(dcgm)
    return everything, dcgm_only
