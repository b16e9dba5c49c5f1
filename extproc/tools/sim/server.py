"""aiohttp adapter: the HTTP face of a simulated site (OpenAI-compatible API, metrics, timing).

The concerns live apart: ``config.py`` (the site's options), ``api.py`` (request validation and
response shapes, pure), ``replica.py`` (the real-time engine loop and the streams it writes),
``engine.py`` / ``kvcache.py`` (the scheduler and KV blocks, pure). This module wires them to HTTP.
"""

from __future__ import annotations

import asyncio
import base64
import os
import random
import time
from collections import deque
from dataclasses import asdict
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .api import (
    ApiError,
    ApiLimits,
    PreparedRequest,
    completion_body,
    error_body,
    natural_length,
    prepare_request,
    sse_templates,
    usage_chunk,
)
from .config import SimSiteConfig
from .engine import FINISHED, SimRequest
from .kvcache import hash_blocks
from .metrics import build_registries
from .profiles import ReplicaHardware, load_profiles, make_hardware
from .replica import Replica, Sink, frame
from .stats import timing_summary

MAX_BODY_BYTES = 64 * 1024 * 1024


def _json(body: bytes, status: int = 200) -> web.Response:
    return web.Response(status=status, body=body, content_type="application/json")


def error_response(message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None) -> web.Response:
    return _json(error_body(message, status, err_type, param), status)


class SimSite:
    """A running simulated site: replicas, their engine tasks, and the HTTP server."""

    def __init__(self, config: SimSiteConfig, hw: ReplicaHardware | None = None) -> None:
        self.config = config
        if hw is None:
            config.validate()
            profiles = load_profiles(config.profiles)
            hw = make_hardware(
                profiles,
                config.gpu,
                config.model,
                config.gpus_per_replica,
                speed_factor=config.speed_factor / config.time_dilation,
                max_model_len=config.max_model_len,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                gpu_memory_utilization=config.gpu_memory_utilization,
            )
        config.validate()
        self.hw = hw
        self.served_model_name = config.served_model_name or hw.model.served_name
        # Names a client may use for the model: the served name and the profile key.
        self.model_aliases = {self.served_model_name, hw.model.key, hw.model.served_name}
        self.limits = ApiLimits(
            frozenset(self.model_aliases), hw.effective_max_model_len, config.ignore_eos,
            config.natural_output_min, config.natural_output_max,
        )
        self.prefix_caching = hw.engine.enable_prefix_caching if config.prefix_caching is None else config.prefix_caching
        # Link delays scale with the speed factor like every other simulated duration (not with
        # time_dilation: the link delay given is wall time, see SimSiteConfig).
        self._records: deque[dict[str, Any]] = deque(maxlen=max(1, config.record_prompts))
        self.link_delay_s = config.link_delay_ms / 1000.0 / config.speed_factor
        self.link_jitter_s = min(config.link_jitter_ms, config.link_delay_ms) / 1000.0 / config.speed_factor
        self.replicas: list[Replica] = []
        self.created = int(time.time())
        self._rng = random.Random(config.seed)
        self._rr = 0
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.registry = None
        self.dcgm_registry = None

    # ---- lifecycle ------------------------------------------------------------------------------
    async def start(self) -> "SimSite":
        self.replicas = [Replica(self, i) for i in range(self.config.replicas)]
        for r in self.replicas:
            r.start()
        self.registry, self.dcgm_registry = build_registries(self)
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/v1/chat/completions", self.handle_chat)
        app.router.add_post("/v1/completions", self.handle_completion)
        app.router.add_get("/v1/models", self.handle_models)
        app.router.add_get("/health", self.handle_health)
        app.router.add_get("/metrics", self.handle_metrics)
        app.router.add_get("/metrics/dcgm", self.handle_dcgm)
        app.router.add_get("/sim/info", self.handle_info)
        app.router.add_get("/sim/timing", self.handle_timing)
        app.router.add_post("/sim/link", self.handle_link)
        app.router.add_get("/_aigrid/records", self.handle_records)
        app.router.add_delete("/_aigrid/records", self.handle_clear_records)
        # handler_cancellation: a client that disconnects cancels its handler, which aborts the
        # request in the engine (frees its KV) instead of generating into the void.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.host, self.config.port, backlog=4096, reuse_address=True)
        await site.start()
        port = self.config.port
        server = getattr(site, "_server", None)
        if server is not None and server.sockets:
            port = server.sockets[0].getsockname()[1]
        self.port = port
        self.url = f"http://{self.config.host}:{port}"
        return self

    async def stop(self) -> None:
        for r in self.replicas:
            await r.stop()
            for req in [*r.core.running, *r.core.waiting]:
                if isinstance(req.sink, Sink):
                    req.sink.fail()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- helpers --------------------------------------------------------------------------------
    def _pick_replica(self) -> Replica:
        # Least loaded; ties broken round-robin so idle replicas share work.
        n = len(self.replicas)
        self._rr = (self._rr + 1) % n
        best = None
        for k in range(n):
            r = self.replicas[(self._rr + k) % n]
            if best is None or r.load < best.load:
                best = r
        assert best is not None
        return best

    def _natural_len(self, seed: Any) -> int:
        return natural_length(self.limits, seed, self._rng)

    async def _read_json(self, request: web.Request) -> dict[str, Any]:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(f"request body larger than {MAX_BODY_BYTES} bytes", 413, "BadRequestError") from None
        if self.config.record_prompts > 0:
            self._records.append({
                "site": self.config.name,
                "path": request.path,
                "headers": {k.lower(): v for k, v in request.headers.items()
                            if k.lower().startswith("x-aigrid") or k.lower() == "x-request-id"},
                "body_b64": base64.b64encode(raw).decode(),
            })
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ApiError(f"JSON decode error: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError("request body must be a JSON object")
        return body

    # ---- handlers -------------------------------------------------------------------------------
    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def handle_completion(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            p = prepare_request(body, kind, self.limits, self._natural_len)
        except ApiError as err:
            return _json(err.body(), err.status)
        replica = self._pick_replica()
        replica.inbound += 1
        try:
            await self._link_sleep()
        finally:
            replica.inbound -= 1
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(16).hex()
        sink = Sink(p.stream, p.offset, p.texts)
        # Prompt token ids hash into the KV block chain: equal prefixes hit the same cached blocks.
        hashes = hash_blocks(p.prompt_ids, self.hw.engine.block_size) if self.prefix_caching else None
        req = SimRequest(
            rid, p.prompt_len, p.max_output, asyncio.get_running_loop().time(), p.finish_reason, sink,
            block_hashes=hashes,
        )
        sink.req = req
        sink.replica = replica
        if p.stream:
            sink.set_templates(sse_templates(p, rid, self.served_model_name, int(time.time())))
            return await self._stream(request, replica, req, sink, p)
        try:
            replica.submit(req)
            await sink.done
        except asyncio.CancelledError:
            sink.fail()
            raise
        if sink.closed and req.status != FINISHED:
            return error_response("request aborted", 500, "InternalServerError")
        out = completion_body(p, rid, self.served_model_name, int(time.time()), req.num_generated, req.num_cached_tokens)
        return _json(orjson.dumps(out))

    async def _link_sleep(self) -> None:
        d = self.link_delay_s
        if d <= 0:
            return
        j = self.link_jitter_s
        await asyncio.sleep(max(0.0, d + (self._rng.uniform(-j, j) if j > 0 else 0.0)))

    async def _stream(self, request: web.Request, replica: Replica, req: SimRequest, sink: Sink, p: PreparedRequest) -> web.StreamResponse:
        resp = web.StreamResponse(
            status=200,
            headers={"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
        )
        direct_ok = request.version >= (1, 1)
        if direct_ok:
            resp.enable_chunked_encoding()
        await resp.prepare(request)
        try:
            replica.submit(req)
            await sink.first
            if sink.closed:
                return resp
            # First write through aiohttp (sends the headers with it), then hand the transport to the
            # replica task so later tokens cost one write each, no wake-up of this handler.
            data = b"".join(sink.pending)
            sink.pending.clear()
            await resp.write(data)
            if direct_ok and request.transport is not None:
                tr = request.transport
                while sink.pending:
                    data = b"".join(sink.pending)
                    sink.pending.clear()
                    tr.write(frame(data))
                sink.transport = tr
                sink.direct = True
                await sink.done
            else:
                while True:
                    if sink.pending:
                        data = b"".join(sink.pending)
                        sink.pending.clear()
                        await resp.write(data)
                    if sink.done.done() and not sink.pending:
                        break
                    # HTTP/1.0 has no chunked framing to hand over: poll the sink (rare clients only).
                    await asyncio.wait({sink.done}, timeout=0.005)
            if sink.closed and req.status != FINISHED:
                return resp
            tail = b""
            if p.include_usage:
                tail += usage_chunk(p, req.rid, self.served_model_name, int(time.time()), req.num_generated, req.num_cached_tokens)
            tail += b"data: [DONE]\n\n"
            await resp.write(tail)
            await resp.write_eof()
        except asyncio.CancelledError:
            sink.fail()
            raise
        except (ConnectionResetError, ConnectionError):
            sink.fail()
        return resp

    async def handle_models(self, request: web.Request) -> web.Response:
        m = self.served_model_name
        data = {
            "object": "list",
            "data": [
                {
                    "id": m,
                    "object": "model",
                    "created": self.created,
                    "owned_by": "vllm",
                    "root": self.hw.model.served_name,
                    "parent": None,
                    "max_model_len": self.hw.effective_max_model_len,
                    "permission": [],
                }
            ],
        }
        return web.Response(body=orjson.dumps(data), content_type="application/json")

    async def handle_records(self, request: web.Request) -> web.Response:
        return web.Response(body=orjson.dumps(list(self._records)), content_type="application/json")

    async def handle_clear_records(self, request: web.Request) -> web.Response:
        self._records.clear()
        return web.Response(text="cleared")

    async def handle_health(self, request: web.Request) -> web.Response:
        # The link delays every packet, health checks and RTT probes included (there and back).
        await self._link_sleep()
        await self._link_sleep()
        return web.Response(status=200)

    async def handle_metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)  # type: ignore[arg-type]
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_dcgm(self, request: web.Request) -> web.Response:
        body = generate_latest(self.dcgm_registry)  # type: ignore[arg-type]
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def handle_link(self, request: web.Request) -> web.Response:
        """Fault injection: change the one-way link delay (ms, simulated time) of a running site, e.g. a
        long-haul link degrading. Body {"delay_ms": 40}; the answer carries the delay now in force."""
        try:
            doc = orjson.loads(await request.read())
            delay_ms = float(doc["delay_ms"])
            if not 0 <= delay_ms <= 60_000:
                raise ValueError("delay_ms must be within [0, 60000]")
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            return web.json_response({"error": f"body must be {{\"delay_ms\": number}}: {exc}"}, status=400)
        self.link_delay_s = delay_ms / 1000.0 / self.config.speed_factor
        self.link_jitter_s = min(self.link_jitter_s, self.link_delay_s)
        return web.json_response({"delay_ms": delay_ms})

    async def handle_info(self, request: web.Request) -> web.Response:
        info = {"site": asdict(self.config), "url": self.url, "replica": self.hw.describe()}
        return web.Response(body=orjson.dumps(info), content_type="application/json")

    def timing(self, reset: bool = False) -> dict[str, Any]:
        """The simulator's own timing error since start (or the last reset), over all replicas, with
        its verdict: ``valid`` is false when lateness p99 or clock slip passed the configured bound."""
        c = self.config
        out = timing_summary(
            [s for r in self.replicas for s in r.lateness_samples],
            sum(r.slip_seconds for r in self.replicas),
            lateness_p99_bound_s=c.lateness_p99_bound_ms / 1000.0,
            max_slip_s=c.max_slip_s,
        )
        out.update({
            "site": c.name,
            "generation_tokens": sum(r.core.stats.generation_tokens for r in self.replicas),
            "model_busy_seconds": sum(r.core.stats.busy_seconds for r in self.replicas),
            "running": sum(r.core.num_running for r in self.replicas),
            "waiting": sum(r.core.num_waiting for r in self.replicas),
        })
        if reset:
            for r in self.replicas:
                r.lateness_samples.clear()
                r.slip_seconds = 0.0
        return out

    async def handle_timing(self, request: web.Request) -> web.Response:
        reset = request.query.get("reset", "") in ("1", "true", "yes")
        return _json(orjson.dumps(self.timing(reset)))


async def start_sim_site(cfg: SimSiteConfig | dict[str, Any]) -> SimSite:
    """Start one simulated site in the running event loop; ``await site.stop()`` ends it.

    ``cfg.port = 0`` picks a free port; ``site.url`` tells which.
    """
    if isinstance(cfg, dict):
        cfg = SimSiteConfig.from_mapping(cfg)
    site = SimSite(cfg)
    return await site.start()


async def start_sim_sites(cfgs: list[SimSiteConfig]) -> list[SimSite]:
    """Start several sites in this process (each on its own port); stops the started ones on failure."""
    started: list[SimSite] = []
    try:
        for c in cfgs:
            started.append(await start_sim_site(c))
    except BaseException:
        for s in started:
            await s.stop()
        raise
    return started
