"""The OpenAI-compatible API as vLLM serves it: request validation and response shapes. PURE.

``prepare_request`` turns a parsed JSON body into what the engine needs (prompt token ids, output
length, finish reason, stop-string cut) or raises ``ApiError`` with vLLM's message, status and
``param``. The HTTP adapter (``server.py``) only reads bodies and writes these shapes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any, Callable

import orjson

from extproc.tools.tokens import Filler, chat_ids, message_text, text_ids


class ApiError(Exception):
    """An error answered in vLLM's shape: {"object":"error","message",...,"code"}."""

    def __init__(self, message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None):
        super().__init__(message)
        self.message = message
        self.status = status
        self.err_type = err_type
        self.param = param

    def body(self) -> bytes:
        return error_body(self.message, self.status, self.err_type, self.param)


def error_body(message: str, status: int = 400, err_type: str = "BadRequestError", param: str | None = None) -> bytes:
    return orjson.dumps({"object": "error", "message": message, "type": err_type, "param": param, "code": status})


@dataclass(frozen=True)
class ApiLimits:
    """What a site accepts: model names, context, and how it picks a natural output length."""

    model_aliases: frozenset[str]
    max_model_len: int
    ignore_eos: bool
    natural_output_min: int
    natural_output_max: int


def natural_length(limits: ApiLimits, seed: Any, fallback: random.Random) -> int:
    """The answer's natural (EOS) length: from the request's ``seed`` when it has one, so one request
    gets one length at every site and in every run; else the site's own seeded sequence."""
    lo, hi = limits.natural_output_min, limits.natural_output_max
    if isinstance(seed, int) and not isinstance(seed, bool):
        return random.Random(seed).randint(lo, hi)
    return fallback.randint(lo, hi)


@dataclass
class PreparedRequest:
    kind: str  # "chat" | "completion"
    prompt_ids: list[int]
    max_output: int
    finish_reason: str
    stop_hit: str | None
    offset: int
    stream: bool
    include_usage: bool
    texts: list[bytes] | None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_len(self) -> int:
        return len(self.prompt_ids)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _prompt_ids(body: dict[str, Any], kind: str) -> list[int]:
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
        return chat_ids(messages)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        ids = text_ids(prompt)
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        ids = text_ids(prompt[0])
    elif isinstance(prompt, list) and prompt and all(_is_int(t) for t in prompt):
        ids = list(prompt)
    elif isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], list) and prompt[0] and all(
        _is_int(t) for t in prompt[0]
    ):
        ids = list(prompt[0])
    elif prompt is None:
        raise ApiError("prompt: field required", param="prompt")
    else:
        raise ApiError("prompt must be a string, a list with one string, or a list of token ids", param="prompt")
    if not ids:
        raise ApiError("Prompt cannot be empty", param="prompt")
    return ids


def prepare_request(
    body: dict[str, Any], kind: str, limits: ApiLimits, natural_len: Callable[[Any], int]
) -> PreparedRequest:
    """Validate a request body as vLLM does and decide its output (length, finish reason, stop cut)."""
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise ApiError("model must be a string", param="model")
    if model is not None and model not in limits.model_aliases:
        raise ApiError(f"The model `{model}` does not exist.", 404, "NotFoundError", param="model")
    n = body.get("n", 1)
    if n is not None and (not _is_int(n) or n != 1):
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
    seed = body.get("seed")
    if seed is not None and not _is_int(seed):
        raise ApiError("seed must be an integer", param="seed")

    ids = _prompt_ids(body, kind)
    prompt_len = len(ids)
    max_len = limits.max_model_len
    if prompt_len >= max_len:
        raise ApiError(
            f"This model's maximum context length is {max_len} tokens. However, your request has "
            f"{prompt_len} input tokens. Please reduce the length of the input messages.",
            param="messages" if kind == "chat" else "prompt",
        )

    # Output length
    mt_name = "max_completion_tokens" if kind == "chat" and body.get("max_completion_tokens") is not None else "max_tokens"
    mt = body.get(mt_name)
    if mt is not None and not _is_int(mt):
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
    if not _is_int(min_tokens) or min_tokens < 0:
        raise ApiError("min_tokens must be a non-negative integer", param="min_tokens")
    if min_tokens > limit:
        raise ApiError(f"min_tokens ({min_tokens}) must be less than or equal to max_tokens ({limit}).", param="min_tokens")
    ignore_eos = limits.ignore_eos or bool(body.get("ignore_eos", False))
    if ignore_eos:
        out, reason = limit, "length"
    else:
        natural = max(natural_len(seed), min_tokens)
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
    offset = Filler.offset_for(f"{prompt_len}:{seed}")
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
    return PreparedRequest(kind, ids, out, reason, stop_hit, offset, stream, include_usage, texts)


# ---- response shapes -----------------------------------------------------------------------------------


def usage(prompt_tokens: int, completion_tokens: int, cached_tokens: int) -> dict[str, Any]:
    """vLLM's usage block with prompt-token details (``--enable-prompt-tokens-details``)."""
    return {
        "prompt_tokens": prompt_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
        "completion_tokens": completion_tokens,
        "prompt_tokens_details": {"cached_tokens": cached_tokens},
    }


def completion_body(
    p: PreparedRequest, rid: str, model: str, created: int, generated: int, cached_tokens: int
) -> dict[str, Any]:
    """The non-streamed response of a finished request."""
    text = Filler.visible_text(p.offset, generated, p.stop_hit)
    choice: dict[str, Any]
    if p.kind == "chat":
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
    return {
        "id": rid,
        "object": obj,
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": usage(p.prompt_len, generated, cached_tokens),
    }


@dataclass(frozen=True)
class SseTemplates:
    """Byte templates of a stream's chunks, so each token is spliced in without a JSON encoder."""

    first_prefix: bytes
    prefix: bytes
    suffix_more: bytes
    suffix_last: bytes


def sse_templates(p: PreparedRequest, rid: str, model: str, created: int) -> SseTemplates:
    m = orjson.dumps(model)
    c = str(created).encode()
    reason = orjson.dumps(p.finish_reason)
    stop_reason = orjson.dumps(p.stop_hit)
    if p.kind == "chat":
        head = b'data: {"id":"' + rid.encode() + b'","object":"chat.completion.chunk","created":' + c + b',"model":' + m + b',"choices":[{"index":0,"delta":{'
        prefix = head + b'"content":"'
        # vLLM's first chunk carries the role, then the first content delta.
        first = head + b'"role":"assistant","content":""},"logprobs":null,"finish_reason":null}]}\n\n' + prefix
        more = b'"},"logprobs":null,"finish_reason":null}]}\n\n'
        last = b'"},"logprobs":null,"finish_reason":' + reason + b',"stop_reason":' + stop_reason + b"}]}\n\n"
        return SseTemplates(first, prefix, more, last)
    head = b'data: {"id":"' + rid.encode() + b'","object":"text_completion","created":' + c + b',"model":' + m + b',"choices":[{"index":0,"text":"'
    more = b'","logprobs":null,"finish_reason":null,"stop_reason":null}]}\n\n'
    last = b'","logprobs":null,"finish_reason":' + reason + b',"stop_reason":' + stop_reason + b"}]}\n\n"
    return SseTemplates(head, head, more, last)


def usage_chunk(p: PreparedRequest, rid: str, model: str, created: int, generated: int, cached_tokens: int) -> bytes:
    """The ``include_usage`` chunk (``choices: []``) that precedes ``[DONE]``."""
    chunk = {
        "id": rid,
        "object": "chat.completion.chunk" if p.kind == "chat" else "text_completion",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage(p.prompt_len, generated, cached_tokens),
    }
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
