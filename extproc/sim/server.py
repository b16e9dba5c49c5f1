"""aiohttp adapter: serves the OpenAI-compatible API of a simulated site and runs its engine loops.

Design for time fidelity on a small CPU (hundreds of streams on 2 cores):

* one asyncio task per replica runs the engine: schedule a step, sleep until its modelled end, commit;
* the tokens of a step are written by that same task straight to each stream's transport (already
  framed as HTTP chunks), so a streamed token costs one ``transport.write`` and no task wake-up; a
  request handler wakes only twice (first token, end of stream);
* the step timeline is absolute: a step that ends late does not delay the next one's modelled end, so a
  short hiccup is caught up instead of drifting; lateness is measured on every step and exported.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .engine import FINISHED, EngineCore, SimRequest
from .metrics import build_registries
from .profiles import ReplicaHardware, load_profiles, make_hardware
from .stats import LATENESS_BUCKETS, Hist
from .tokens import Filler, count_chat, count_text, message_text

log = logging.getLogger("aigrid.sim")

MAX_BODY_BYTES = 64 * 1024 * 1024
# A stream whose client stopped reading is cut once this much output is queued for it.
MAX_STREAM_BUFFER = 8 * 1024 * 1024
# asyncio's epoll wait rounds its timeout up to whole milliseconds, so a timer fires 0-1 ms after its
# deadline. Asking to wake half a millisecond early centres the error on zero (lateness in about
# [-0.5, +0.5] ms on an idle box) instead of a systematic ~0.5 ms delay on every step.
WAKE_LEAD_S = 0.0005


@dataclass
class SiteConfig:
    """One simulated site: a GPU profile x GPUs per replica x replicas, behind one HTTP port."""

    name: str = "sim"
    gpu: str = "H100"
    model: str = "llama-3.1-8b"
    gpus_per_replica: int = 1
    replicas: int = 1
    host: str = "127.0.0.1"
    port: int = 8000
    link_delay_ms: float = 0.0  # one way: applied to request arrival and again to the response stream
    link_jitter_ms: float = 0.0  # uniform in [-jitter, +jitter] around the delay, like netem's default
    speed_factor: float = 1.0
    profiles: str | None = None
    served_model_name: str | None = None
    max_model_len: int = 0
    max_num_seqs: int | None = None
    max_num_batched_tokens: int | None = None
    gpu_memory_utilization: float | None = None
    # Output length when the request does not force it: a natural EOS drawn uniformly from this range
    # (deterministic per site and request order), capped by max_tokens.
    natural_output_min: int = 128
    natural_output_max: int = 512
    ignore_eos: bool = False  # always generate exactly max_tokens (like vLLM's ignore_eos)
    seed: int = 0
    slip_threshold_ms: float = 100.0
    # Send streamed tokens in groups of this many (first and last token always go at once), like
    # vLLM's --stream-interval. 1 = one SSE event per token per step, as vLLM does by default; larger
    # values cut the per-token socket writes when hundreds of streams share a small CPU.
    stream_interval: int = 1
    # Keep the last N request bodies (with their x-aigrid-* / x-request-id headers) for evaluation at
    # GET /_aigrid/records (DELETE clears): how the load test sees a prompt after the gateway rewrote it.
    # 0 = off. Bounded, so a long run cannot grow memory.
    record_prompts: int = 0

    @classmethod
    def from_mapping(cls, m: dict[str, Any]) -> "SiteConfig":
        known = {f for f in cls.__dataclass_fields__}
        norm = {k.replace("-", "_"): v for k, v in m.items()}
        unknown = set(norm) - known
        if unknown:
            raise ValueError(f"unknown site option(s): {', '.join(sorted(unknown))}")
        return cls(**norm)


class ApiError(Exception):
    """An error answered in vLLM's shape: {"object":"error","message",...,"code"}."""

    def __init__(self, message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param

    def response(self) -> web.Response:
        return error_response(self.message, self.status, self.err_type, self.param)


def error_response(message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None) -> web.Response:
    body = {"object": "error", "message": message, "type": err_type, "param": param, "code": status}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


# ---- per-request output sinks --------------------------------------------------------------------


class Sink:
    """Where one request's tokens go. Filled by the replica task; drained by the request handler."""

    __slots__ = (
        "stream", "prefix", "suffix_more", "suffix_last", "first_prefix", "texts", "offset",
        "sent", "direct", "transport", "pending", "first", "done", "req", "replica", "closed", "held",
    )

    def __init__(self, stream: bool, offset: int, texts: list[bytes] | None) -> None:
        self.stream = stream
        self.offset = offset  # filler word offset
        self.texts = texts  # per-token text when a stop string cuts the output; else the word table
        self.prefix = b""
        self.first_prefix = b""
        self.suffix_more = b""
        self.suffix_last = b""
        self.sent = 0
        self.direct = False
        self.transport: asyncio.Transport | None = None
        self.pending: list[bytes] = []
        self.held: list[bytes] = []  # tokens waiting for the stream interval
        loop = asyncio.get_running_loop()
        self.first: asyncio.Future[None] = loop.create_future()
        self.done: asyncio.Future[None] = loop.create_future()
        self.req: SimRequest | None = None
        self.replica: Replica | None = None
        self.closed = False

    def token_bytes(self, last: bool) -> bytes:
        i = self.sent
        self.sent = i + 1
        if self.texts is not None:
            word = self.texts[i] if i < len(self.texts) else b""
        else:
            words = Filler.words_json
            word = words[(self.offset + i) % len(words)]
        head = self.first_prefix if i == 0 else self.prefix
        return head + word + (self.suffix_last if last else self.suffix_more)

    def fail(self) -> None:
        """The client is gone (or stopped reading): stop generating for it."""
        if self.closed:
            return
        self.closed = True
        if self.req is not None and self.replica is not None:
            self.replica.core.abort(self.req)
        for fut in (self.first, self.done):
            if not fut.done():
                fut.set_result(None)


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%b\r\n" % (len(data), data)


# ---- a replica: one engine + its loop --------------------------------------------------------------


class Replica:
    def __init__(self, site: "SimSite", index: int) -> None:
        self.site = site
        self.index = index
        self.core = EngineCore(site.hw)
        self.lateness = Hist(LATENESS_BUCKETS)
        self.lateness_samples: deque[float] = deque(maxlen=200_000)
        self.slip_seconds = 0.0
        self.inbound = 0  # requests on the simulated link, not yet arrived at the engine
        self._wake = asyncio.Event()
        self._wake_at: float | None = None
        self._busy: deque[tuple[float, float]] = deque()
        self._last_due = 0.0
        self._task: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._rng = random.Random(site.config.seed * 1000 + index)

    @property
    def load(self) -> int:
        return self.core.num_running + self.core.num_waiting + self.inbound

    def start(self) -> None:
        self._task = self._loop.create_task(self._run(), name=f"sim-{self.site.config.name}-{self.index}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def submit(self, req: SimRequest) -> None:
        self.core.add(req)
        if not self._wake.is_set():
            self._wake_at = self._loop.time()
            self._wake.set()

    def gpu_util_percent(self, window: float = 1.0) -> float:
        """Share of the last ``window`` seconds the modelled GPU was busy (DCGM samples ~1 s)."""
        now = self._loop.time()
        lo = now - window
        busy = 0.0
        for s, e in self._busy:
            if e <= lo:
                continue
            busy += min(e, now) - max(s, lo)
        return max(0.0, min(100.0, 100.0 * busy / window))

    async def _run(self) -> None:
        loop = self._loop
        core = self.core
        slip_threshold = self.site.config.slip_threshold_ms / 1000.0
        t_free = loop.time()  # modelled time at which the GPU finished its last step
        try:
            while True:
                if not core.has_work:
                    self._wake.clear()
                    await self._wake.wait()
                    # Idle GPU: the step starts when the request arrived, not when this task woke.
                    t_free = max(t_free, self._wake_at or loop.time())
                now = loop.time()
                start = t_free
                if now - start > slip_threshold:
                    # Too far behind to catch up by running steps back to back: give the time up,
                    # visibly (aigrid_sim_clock_slip_seconds_total).
                    self.slip_seconds += now - start
                    start = now
                plan = core.schedule(start)
                if plan.empty:
                    t_free = start
                    continue
                end = start + plan.duration
                delay = end - loop.time() - WAKE_LEAD_S
                if delay > 0:
                    await asyncio.sleep(delay)
                emitted = core.commit(plan, end)
                t_free = end
                if emitted:
                    self._dispatch(emitted, end)
                # Lateness is taken after the step's tokens were handed to the sockets (or to the
                # simulated link): it covers a late timer and the cost of writing hundreds of streams.
                late = loop.time() - end
                self.lateness.observe(late)
                self.lateness_samples.append(late)
                busy = self._busy
                busy.append((start, end))
                while busy and busy[0][1] < end - 5.0:
                    busy.popleft()
        except asyncio.CancelledError:
            raise
        except Exception:  # pragma: no cover - a bug here must not silently hang every stream
            log.exception("sim engine loop %s/%d crashed", self.site.config.name, self.index)
            for r in [*core.running, *core.waiting]:
                if isinstance(r.sink, Sink):
                    r.sink.fail()
            raise

    def _dispatch(self, emitted: list[SimRequest], t_end: float) -> None:
        delay = self.site.link_delay_s
        batch = [(r.sink, r.status == FINISHED) for r in emitted]
        if delay <= 0:
            self._deliver(batch)
            return
        # The step's tokens cross the simulated link together; jitter varies per step and delivery
        # times stay monotone (a TCP stream never reorders).
        jitter = self.site.link_jitter_s
        due = t_end + delay + (self._rng.uniform(-jitter, jitter) if jitter > 0 else 0.0)
        due = max(due, self._last_due)
        self._last_due = due
        self._loop.call_at(due, self._deliver, batch)

    def _deliver(self, batch: list[tuple[Any, bool]]) -> None:
        interval = self.site.config.stream_interval
        for sink, last in batch:
            if not isinstance(sink, Sink) or sink.closed:
                continue
            if sink.stream:
                data = sink.token_bytes(last)
                if sink.direct:
                    if interval > 1:
                        if not last and sink.sent % interval:
                            sink.held.append(data)
                            continue
                        if sink.held:
                            sink.held.append(data)
                            data = b"".join(sink.held)
                            sink.held.clear()
                    tr = sink.transport
                    if tr is None or tr.is_closing() or tr.get_write_buffer_size() > MAX_STREAM_BUFFER:
                        sink.fail()
                        continue
                    tr.write(_frame(data))
                else:
                    sink.pending.append(data)
                    if not sink.first.done():
                        sink.first.set_result(None)
            else:
                sink.sent += 1
            if last and not sink.done.done():
                sink.done.set_result(None)


# ---- the site ----------------------------------------------------------------------------------------


@dataclass
class _Prepared:
    kind: str  # "chat" | "completion"
    prompt_len: int
    max_output: int
    finish_reason: str
    stop_hit: str | None
    offset: int
    stream: bool
    include_usage: bool
    texts: list[bytes] | None
    extra: dict[str, Any] = field(default_factory=dict)


class SimSite:
    """A running simulated site: replicas, their engine tasks, and the HTTP server."""

    def __init__(self, config: SiteConfig, hw: ReplicaHardware | None = None) -> None:
        self.config = config
        if hw is None:
            profiles = load_profiles(config.profiles)
            hw = make_hardware(
                profiles,
                config.gpu,
                config.model,
                config.gpus_per_replica,
                speed_factor=config.speed_factor,
                max_model_len=config.max_model_len,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                gpu_memory_utilization=config.gpu_memory_utilization,
            )
        if config.replicas < 1:
            raise ValueError("replicas must be >= 1")
        if config.stream_interval < 1:
            raise ValueError("stream_interval must be >= 1")
        if config.natural_output_min < 1 or config.natural_output_max < config.natural_output_min:
            raise ValueError("natural output range must satisfy 1 <= min <= max")
        self.hw = hw
        self.served_model_name = config.served_model_name or hw.model.served_name
        # Names a client may use for the model: the served name and the profile key.
        self.model_aliases = {self.served_model_name, hw.model.key, hw.model.served_name}
        # Link delays scale with the speed factor like every other simulated duration.
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
        lo, hi = self.config.natural_output_min, self.config.natural_output_max
        if isinstance(seed, int) and not isinstance(seed, bool):
            return random.Random(seed).randint(lo, hi)
        return self._rng.randint(lo, hi)

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

    def _prepare(self, body: dict[str, Any], kind: str) -> _Prepared:
        model = body.get("model")
        if model is not None and not isinstance(model, str):
            raise ApiError("model must be a string", param="model")
        if model is not None and model not in self.model_aliases:
            raise ApiError(f"The model `{model}` does not exist.", 404, "NotFoundError", param="model")
        n = body.get("n", 1)
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != 1):
            raise ApiError("only n=1 is supported by the simulator", param="n")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise ApiError("stream must be a boolean", param="stream")
        so = body.get("stream_options")
        if so is not None and not isinstance(so, dict):
            raise ApiError("stream_options must be an object", param="stream_options")
        if so and not stream:
            raise ApiError("Stream options can only be defined when `stream=True`.", param="stream_options")
        include_usage = bool(so and so.get("include_usage"))
        for fname, lo, hi in (("temperature", 0.0, 2.0), ("top_p", 0.0, 1.0)):
            v = body.get(fname)
            if v is not None and (not isinstance(v, (int, float)) or isinstance(v, bool) or not lo <= v <= hi):
                raise ApiError(f"{fname} must be a number in [{lo}, {hi}], got {v!r}.", param=fname)

        # Prompt
        if kind == "chat":
            messages = body.get("messages")
            if not isinstance(messages, list) or not messages:
                raise ApiError("messages: field required (a non-empty list of messages)", param="messages")
            for m in messages:
                if not isinstance(m, dict) or not isinstance(m.get("role"), str):
                    raise ApiError("each message must be an object with a string 'role'", param="messages")
                try:
                    message_text(m.get("content"))
                except TypeError as exc:
                    raise ApiError(str(exc), param="messages") from None
            prompt_len = count_chat(messages)
        else:
            prompt = body.get("prompt")
            if isinstance(prompt, str):
                prompt_len = count_text(prompt)
            elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
                prompt_len = count_text(prompt[0])
            elif isinstance(prompt, list) and prompt and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
                prompt_len = len(prompt)
            elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list) and prompt[0] and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt[0]
            ):
                prompt_len = len(prompt[0])
            elif prompt is None:
                raise ApiError("prompt: field required", param="prompt")
            else:
                raise ApiError("prompt must be a string, a list with one string, or a list of token ids", param="prompt")
            if prompt_len == 0:
                raise ApiError("Prompt cannot be empty", param="prompt")
        max_len = self.hw.effective_max_model_len
        if prompt_len >= max_len:
            raise ApiError(
                f"This model's maximum context length is {max_len} tokens. However, your request has "
                f"{prompt_len} input tokens. Please reduce the length of the input messages.",
                param="messages" if kind == "chat" else "prompt",
            )

        # Output length
        mt_name = "max_completion_tokens" if kind == "chat" and body.get("max_completion_tokens") is not None else "max_tokens"
        mt = body.get(mt_name)
        if mt is not None and (not isinstance(mt, int) or isinstance(mt, bool)):
            raise ApiError(f"{mt_name} must be an integer", param=mt_name)
        if mt is not None and mt < 1:
            raise ApiError(f"{mt_name} must be at least 1, got {mt}.", param=mt_name)
        if mt is not None and prompt_len + mt > max_len:
            raise ApiError(
                f"'{mt_name}' is too large: {mt}. This model's maximum context length is {max_len} tokens "
                f"and your request has {prompt_len} input tokens ({mt} > {max_len} - {prompt_len}).",
                param=mt_name,
            )
        limit = mt if mt is not None else max_len - prompt_len
        min_tokens = body.get("min_tokens", 0) or 0
        if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0:
            raise ApiError("min_tokens must be a non-negative integer", param="min_tokens")
        if min_tokens > limit:
            raise ApiError(f"min_tokens ({min_tokens}) must be less than or equal to max_tokens ({limit}).", param="min_tokens")
        ignore_eos = self.config.ignore_eos or bool(body.get("ignore_eos", False))
        if ignore_eos:
            out, reason = limit, "length"
        else:
            natural = max(self._natural_len(body.get("seed")), min_tokens)
            out, reason = (natural, "stop") if natural <= limit else (limit, "length")

        # Stop strings: the filler is deterministic, so where a stop string completes is known now.
        stop = body.get("stop")
        if isinstance(stop, str):
            stops = [stop]
        elif stop is None:
            stops = []
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop) and len(stop) <= 4:
            stops = [s for s in stop if s]
        else:
            raise ApiError("stop must be a string or a list of at most 4 strings", param="stop")
        seed_text = f"{prompt_len}:{body.get('seed')}"
        offset = Filler.offset_for(seed_text)
        stop_hit = None
        texts = None
        if stops:
            cut, stop_hit = Filler.stop_cut(offset, max(out, min_tokens), stops)
            if stop_hit is not None and cut >= max(min_tokens, 1):
                out, reason = cut, "stop"
                visible = Filler.visible_text(offset, out, stop_hit)
                texts = []
                pos = 0
                for i in range(out):
                    w = Filler.word(offset, i)
                    texts.append(visible[pos : pos + len(w)].encode())
                    pos += len(w)
            else:
                stop_hit = None
        return _Prepared(kind, prompt_len, out, reason, stop_hit, offset, stream, include_usage, texts)

    def _usage(self, p: _Prepared, completion_tokens: int) -> dict[str, Any]:
        return {
            "prompt_tokens": p.prompt_len,
            "total_tokens": p.prompt_len + completion_tokens,
            "completion_tokens": completion_tokens,
            "prompt_tokens_details": None,
        }

    # ---- handlers -------------------------------------------------------------------------------
    async def handle_chat(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "chat")

    async def handle_completion(self, request: web.Request) -> web.StreamResponse:
        return await self._generate(request, "completion")

    async def _generate(self, request: web.Request, kind: str) -> web.StreamResponse:
        try:
            body = await self._read_json(request)
            p = self._prepare(body, kind)
        except ApiError as err:
            return err.response()
        replica = self._pick_replica()
        replica.inbound += 1
        try:
            await self._link_sleep()
        finally:
            replica.inbound -= 1
        rid = ("chatcmpl-" if kind == "chat" else "cmpl-") + os.urandom(16).hex()
        sink = Sink(p.stream, p.offset, p.texts)
        req = SimRequest(rid, p.prompt_len, p.max_output, asyncio.get_running_loop().time(), p.finish_reason, sink)
        sink.req = req
        sink.replica = replica
        if p.stream:
            self._fill_templates(sink, rid, kind, p)
            return await self._stream(request, replica, req, sink, p)
        try:
            replica.submit(req)
            await sink.done
        except asyncio.CancelledError:
            sink.fail()
            raise
        if sink.closed and req.status != FINISHED:
            return error_response("request aborted", 500, "InternalServerError")
        n = req.num_generated
        text = Filler.visible_text(p.offset, n, p.stop_hit)
        choice: dict[str, Any]
        if kind == "chat":
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text, "tool_calls": []},
                "logprobs": None,
                "finish_reason": p.finish_reason,
                "stop_reason": p.stop_hit,
            }
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": p.finish_reason, "stop_reason": p.stop_hit}
            obj = "text_completion"
        out = {
            "id": rid,
            "object": obj,
            "created": int(time.time()),
            "model": self.served_model_name,
            "choices": [choice],
            "usage": self._usage(p, n),
        }
        return web.Response(body=orjson.dumps(out), content_type="application/json")

    async def _link_sleep(self) -> None:
        d = self.link_delay_s
        if d <= 0:
            return
        j = self.link_jitter_s
        await asyncio.sleep(max(0.0, d + (self._rng.uniform(-j, j) if j > 0 else 0.0)))

    def _fill_templates(self, sink: Sink, rid: str, kind: str, p: _Prepared) -> None:
        model = orjson.dumps(self.served_model_name)
        created = str(int(time.time())).encode()
        reason = orjson.dumps(p.finish_reason)
        stop_reason = orjson.dumps(p.stop_hit)
        if kind == "chat":
            head = b'data: {"id":"' + rid.encode() + b'","object":"chat.completion.chunk","created":' + created + b',"model":' + model + b',"choices":[{"index":0,"delta":{'
            sink.prefix = head + b'"content":"'
            # vLLM's first chunk carries the role, then the first content delta.
            sink.first_prefix = head + b'"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n' + sink.prefix
            sink.suffix_more = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
            sink.suffix_last = b'"},"logprobs":null,"finish_reason":' + reason + b',"stop_reason":' + stop_reason + b"}]}\n\n"
        else:
            head = b'data: {"id":"' + rid.encode() + b'","object":"text_completion","created":' + created + b',"model":' + model + b',"choices":[{"index":0,"text":"'
            sink.prefix = head
            sink.first_prefix = head
            sink.suffix_more = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
            sink.suffix_last = b'","logprobs":null,"finish_reason":' + reason + b',"stop_reason":' + stop_reason + b"}]}\n\n"

    async def _stream(self, request: web.Request, replica: Replica, req: SimRequest, sink: Sink, p: _Prepared) -> web.StreamResponse:
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
                    tr.write(_frame(data))
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
                usage = {
                    "id": req.rid,
                    "object": "chat.completion.chunk" if p.kind == "chat" else "text_completion",
                    "created": int(time.time()),
                    "model": self.served_model_name,
                    "choices": [],
                    "usage": self._usage(p, req.num_generated),
                }
                tail += b"data: " + orjson.dumps(usage) + b"\n\n"
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
        """The simulator's own timing error since start (or the last reset), over all replicas."""
        samples = sorted(s for r in self.replicas for s in r.lateness_samples)
        n = len(samples)

        def q(p: float) -> float:
            return samples[min(n - 1, int(p * n))] if n else 0.0

        out = {
            "steps": n,
            "lateness_mean_s": sum(samples) / n if n else 0.0,
            "lateness_p50_s": q(0.50),
            "lateness_p90_s": q(0.90),
            "lateness_p99_s": q(0.99),
            "lateness_max_s": samples[-1] if n else 0.0,
            "slip_seconds": sum(r.slip_seconds for r in self.replicas),
            "generation_tokens": sum(r.core.stats.generation_tokens for r in self.replicas),
            "model_busy_seconds": sum(r.core.stats.busy_seconds for r in self.replicas),
            "running": sum(r.core.num_running for r in self.replicas),
            "waiting": sum(r.core.num_waiting for r in self.replicas),
        }
        if reset:
            for r in self.replicas:
                r.lateness_samples.clear()
                r.slip_seconds = 0.0
        return out

    async def handle_timing(self, request: web.Request) -> web.Response:
        reset = request.query.get("reset", "") in ("1", "true", "yes")
        return web.Response(body=orjson.dumps(self.timing(reset)), content_type="application/json")


async def start_sim_site(cfg: SiteConfig | dict[str, Any]) -> SimSite:
    """Start one simulated site in the running event loop; ``await site.stop()`` ends it.

    ``cfg.port = 0`` picks a free port; ``site.url`` tells which.
    """
    if isinstance(cfg, dict):
        cfg = SiteConfig.from_mapping(cfg)
    site = SimSite(cfg)
    return await site.start()


async def start_sim_sites(cfgs: list[SiteConfig]) -> list[SimSite]:
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
