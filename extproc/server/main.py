"""`aigrid serve`: wire config, Redis map reader, gateway, rewriter and gRPC together, and run until
SIGTERM/SIGINT, then drain: health goes NOT_SERVING, in-flight streams get `drain_grace_s` to finish."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import uuid

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from extproc.config.schema import GatewayConfig
from extproc.loadmap.peers import PeerTable
from extproc.loadmap.reader import LoadMapReader
from extproc.rewrite import BodyRewriter
from extproc.server.gateway import Gateway
from extproc.server.metrics import GatewayMetrics
from extproc.server.peers import InFlightPublisher
from extproc.server.processor import ExternalProcessor

log = logging.getLogger(__name__)

# gRPC message headroom over the body limit: the ProcessingRequest wraps the body with headers/metadata.
_MESSAGE_OVERHEAD = 1024 * 1024
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


def build_rewriter(config: GatewayConfig, metrics: GatewayMetrics) -> BodyRewriter | None:
    """The compressor when enabled; imported lazily so a routing-only gateway loads no model stack.
    Its metrics go on the gateway's own registry (one /metrics endpoint)."""
    if not config.compression.enabled:
        return None
    from extproc.compression.rewriter import build_compression_rewriter  # noqa: PLC0415

    return build_compression_rewriter(config, registry=metrics.registry)


async def serve(
    config: GatewayConfig,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    rewriter: BodyRewriter | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or `stop` is set). `rewriter` overrides the configured one (embedding)."""
    metrics = GatewayMetrics()
    holder: dict[str, Gateway] = {}

    def on_change(snap) -> None:  # type: ignore[no-untyped-def]
        gw = holder.get("gw")
        if gw is not None:
            gw.on_snapshot(snap)
        metrics.reports_accepted.set(reader.reports_accepted)
        metrics.reports_rejected.set(reader.reports_rejected)

    publish_s = config.gateway.in_flight_publish_ms / 1000.0
    gateway_id = config.gateway.id or uuid.uuid4().hex[:12]
    peers = PeerTable(gateway_id, peer_ttl_s=max(1.0, 4 * publish_s)) if publish_s > 0 else None

    def on_peers(totals: dict[str, int]) -> None:
        gw = holder.get("gw")
        if gw is not None:
            gw.router.set_peer_in_flight(totals)

    reader = LoadMapReader(config.redis, on_change=on_change, peers=peers, on_peers=on_peers)
    if rewriter is None:
        rewriter = build_rewriter(config, metrics)
    gw = Gateway(config, lambda: reader.snapshot, rewriter=rewriter, metrics=metrics)
    holder["gw"] = gw
    publisher = None
    if peers is not None:
        def on_tick() -> None:
            # Silent peers expire here too, and the gauges follow both sides.
            totals = reader.peer_totals()
            gw.router.set_peer_in_flight(totals)
            own = gw.router.sent_since_report
            for s in config.sites:
                metrics.site_in_flight.labels(s.name, "self").set(own.get(s.name, 0))
                metrics.site_in_flight.labels(s.name, "peers").set(totals.get(s.name, 0))

        publisher = InFlightPublisher(config.redis, gateway_id, lambda: gw.router.sent_since_report, publish_s, on_tick=on_tick)

    max_msg = config.gateway.max_body_bytes + _MESSAGE_OVERHEAD
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_msg),
            ("grpc.max_send_message_length", max_msg),
            # Envoy keeps one HTTP/2 connection with many streams; let it ping through idle periods.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ]
    )
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(gw), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = server.add_insecure_port(config.gateway.listen)
    if port == 0:
        raise OSError(f"cannot listen on {config.gateway.listen}")

    httpd = None
    if config.gateway.metrics_listen:
        host, _, mport = config.gateway.metrics_listen.rpartition(":")
        httpd, _thread = start_http_server(int(mport), addr=host or "0.0.0.0", registry=metrics.registry)

    reader.start()
    if publisher is not None:
        publisher.start()
    probe = None
    if config.gateway.rtt_probe_interval_s > 0:
        from extproc.loadmap.rtt import RttProbe  # noqa: PLC0415

        urls = {s.name: s.probe_url for s in config.sites if s.probe_url}
        probe = RttProbe(config, reader.set_measured_rtt, urls=urls or None, interval_s=config.gateway.rtt_probe_interval_s)
        probe.start()
    await server.start()
    for name in ("", SERVICE_NAME):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    log.info(
        "aigrid serve: ext_proc on %s, metrics on %s, %d sites, default %s",
        config.gateway.listen, config.gateway.metrics_listen or "(off)", len(config.sites), config.default_site,
    )
    print(f"aigrid serve: ext_proc listening on {config.gateway.listen}", flush=True)
    # Everything allocated so far (modules, config, model) lives for the whole process: move it out of
    # the collector's reach, so the cyclic GC's full passes scan only what requests allocate.
    gc.collect()
    gc.freeze()
    if ready is not None:
        ready.set()

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread (tests)
            pass
    try:
        await stop.wait()
    finally:
        log.info("draining: health NOT_SERVING, %.1fs grace for in-flight streams", config.gateway.drain_grace_s)
        await health_servicer.enter_graceful_shutdown()
        await server.stop(config.gateway.drain_grace_s)
        if probe is not None:
            await probe.stop()
        if publisher is not None:
            await publisher.stop()
        await reader.stop()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if rewriter is not None:
            await rewriter.close()
