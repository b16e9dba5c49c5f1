"""`aigrid serve`: wire config, Redis map reader, gateway, rewriter and gRPC together, and run until
SIGTERM/SIGINT, then drain: health goes NOT_SERVING, in-flight streams get `drain_grace_s` to finish."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
import uuid

import grpc
from envoy.service.accesslog.v3 import als_pb2_grpc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ep_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from prometheus_client import start_http_server

from extproc.gateway.compression.rewriter import build_compression_rewriter
from extproc.gateway.compression.seam import BodyRewriter
from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.peers import PeerTable
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.gateway.loadmap.rtt import RttProbe
from extproc.gateway.observe.als import AccessLogReceiver
from extproc.gateway.observe.observer import ResponseObserver
from extproc.gateway.observe.tracing import DecisionTracer
from extproc.gateway.server.gateway import Gateway
from extproc.gateway.server.metrics import GatewayMetrics, LoadMapCollector, ResponseChainsCollector
from extproc.gateway.server.peers import InFlightPublisher
from extproc.gateway.server.processor import ExternalProcessor

log = logging.getLogger(__name__)

# gRPC message headroom over the body limit: the ProcessingRequest wraps the body with headers/metadata.
_MESSAGE_OVERHEAD = 1024 * 1024
SERVICE_NAME = "envoy.service.ext_proc.v3.ExternalProcessor"


def build_rewriter(config: GatewayConfig, metrics: GatewayMetrics) -> BodyRewriter | None:
    """The compressor when enabled; imported lazily so a routing-only gateway loads no model stack.
    Its metrics go on the gateway's own registry (one /metrics endpoint)."""
    if not config.compression.enabled:
        return None

    return build_compression_rewriter(config, registry=metrics.registry)


def _add_port(server: grpc.aio.Server, config: GatewayConfig) -> int:
    """The ext_proc port: TLS (mutual with gateway.tls.client_ca_path) when configured, else plain, which
    the default loopback address keeps off the network."""
    t = config.gateway.tls
    if t is None:
        return server.add_insecure_port(config.gateway.listen)
    with open(t.key_path, "rb") as f:
        key = f.read()
    with open(t.cert_path, "rb") as f:
        cert = f.read()
    ca = None
    if t.client_ca_path:
        with open(t.client_ca_path, "rb") as f:
            ca = f.read()
    creds = grpc.ssl_server_credentials([(key, cert)], root_certificates=ca, require_client_auth=ca is not None)
    return server.add_secure_port(config.gateway.listen, creds)


class _MetricsHttp:
    """The Prometheus endpoint. During a rolling restart the old process still holds the port (gRPC shares
    its own port through SO_REUSEPORT; the metrics server does not): the new one then binds in the
    background as soon as the port is free, instead of refusing to start."""

    def __init__(self, listen: str, metrics: GatewayMetrics) -> None:
        host, _, port = listen.rpartition(":")
        self._addr, self._port, self._registry = host or "0.0.0.0", int(port), metrics.registry
        self._httpd = None
        self._closed = threading.Event()
        if not self._try_bind():
            log.warning("metrics port %s busy (a rolling restart?); binding it once it is free", listen)
            threading.Thread(target=self._retry, name="aigrid-metrics-bind", daemon=True).start()

    def _try_bind(self) -> bool:
        try:
            self._httpd, _ = start_http_server(self._port, addr=self._addr, registry=self._registry)
        except OSError:
            return False
        return True

    def _retry(self) -> None:
        while not self._closed.wait(0.2):
            if self._try_bind():
                log.info("metrics listening on %s:%d", self._addr, self._port)
                return

    def close(self) -> None:
        self._closed.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()


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
    metrics.registry.register(
        LoadMapCollector(
            lambda: (reader.reports_accepted, reader.reports_rejected), lambda: reader.snapshot,
            [s.name for s in config.sites], refused=lambda: reader.refused,
        )
    )
    observer = (
        ResponseObserver(config.observability, metrics.registry, [s.name for s in config.sites],
                         endpoints={s.name: list(s.endpoints) for s in config.sites})
        if config.observability.usage else None
    )
    if observer is not None:
        # Responses API chains: the response side tells the gateway which conversation each response
        # id belongs to, so the next turn's previous_response_id keeps the conversation's key.
        observer.on_response_id = gw.chains.learn
    metrics.registry.register(ResponseChainsCollector(gw.chains))

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
    tracer = None
    if config.observability.otlp_traces_endpoint:

        tracer = DecisionTracer(config.observability.otlp_traces_endpoint)
    ep_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(gw, observer, tracer), server)
    if observer is not None and config.observability.usage_via == "access_log":


        als_pb2_grpc.add_AccessLogServiceServicer_to_server(AccessLogReceiver(observer), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = _add_port(server, config)
    if port == 0:
        raise OSError(f"cannot listen on {config.gateway.listen}")

    metrics_http = _MetricsHttp(config.gateway.metrics_listen, metrics) if config.gateway.metrics_listen else None

    reader.start()
    if publisher is not None:
        publisher.start()
    probe = None
    if config.gateway.rtt_probe_interval_s > 0:

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
        if metrics_http is not None:
            metrics_http.close()
        if rewriter is not None:
            await rewriter.close()
        if tracer is not None:
            tracer.shutdown()
