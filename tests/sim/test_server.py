"""The HTTP adapter against the official `openai` client and raw aiohttp: API shape, usage, errors,
metrics. Real HTTP on loopback; nothing here asserts a duration."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest
from openai import AsyncOpenAI

from extproc.tools.sim import SimSite
from extproc.tools.tokens import count_text

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
MSG = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Route this through the grid, please."}]


def client(site: SimSite) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=site.url + "/v1", api_key="sim", max_retries=0)


def parse_metrics(text: str) -> dict[str, float]:
    """name{labels} -> value, summed over label sets per metric name (plus the raw lines)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        key, _, val = line.rpartition(" ")
        name = key.split("{", 1)[0]
        out[name] = out.get(name, 0.0) + float(val)
    return out


async def get_text(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as s:
        async with s.get(url) as r:
            return r.status, await r.text()


async def post_raw(url: str, data: bytes | str, headers: dict[str, str] | None = None) -> tuple[int, dict]:
    async with aiohttp.ClientSession() as s:
        async with s.post(url, data=data, headers=headers or {"Content-Type": "application/json"}) as r:
            return r.status, await r.json(content_type=None)


async def test_models_and_health(site: SimSite) -> None:
    models = await client(site).models.list()
    assert [m.id for m in models.data] == [MODEL]
    status, body = await get_text(site.url + "/health")
    assert status == 200 and body == ""


async def test_chat_non_stream_usage_and_text(site: SimSite) -> None:
    r = await client(site).chat.completions.create(model=MODEL, messages=MSG, max_tokens=40, extra_body={"ignore_eos": True})
    assert r.object == "chat.completion" and r.model == MODEL
    ch = r.choices[0]
    assert ch.message.role == "assistant" and ch.finish_reason == "length"
    assert r.usage.completion_tokens == 40
    assert count_text(ch.message.content) == 40  # one cl100k token per generated token
    # Prompt: content tokens + 3 per message + 3 priming (OpenAI's cl100k chat rule).
    expected_prompt = sum(count_text(m["content"]) + 3 for m in MSG) + 3
    assert r.usage.prompt_tokens == expected_prompt
    assert r.usage.total_tokens == expected_prompt + 40


async def test_chat_stream_with_include_usage(site: SimSite) -> None:
    stream = await client(site).chat.completions.create(
        model=MODEL, messages=MSG, max_tokens=25, stream=True, stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    roles, pieces, finish, usage = [], [], [], None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if not chunk.choices:
            usage = chunk.usage
            continue
        d = chunk.choices[0].delta
        if d.role:
            roles.append(d.role)
        if d.content:
            pieces.append(d.content)
        if chunk.choices[0].finish_reason:
            finish.append(chunk.choices[0].finish_reason)
    assert roles == ["assistant"]
    assert len(pieces) == 25 and finish == ["length"]
    assert usage is not None and usage.completion_tokens == 25
    assert count_text("".join(pieces)) == 25


async def test_stream_without_usage_has_no_usage_chunk(site: SimSite) -> None:
    stream = await client(site).chat.completions.create(model=MODEL, messages=MSG, max_tokens=5, stream=True)
    chunks = [c async for c in stream]
    assert all(c.choices for c in chunks)
    assert all(c.usage is None for c in chunks)


async def test_completions_stream_and_non_stream_agree(site: SimSite) -> None:
    c = client(site)
    kw = dict(model=MODEL, prompt="The optical link carries", max_tokens=12, seed=7)
    r = await c.completions.create(**kw)
    s = await c.completions.create(**kw, stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    async for chunk in s:
        if chunk.choices:
            text += chunk.choices[0].text
        else:
            usage = chunk.usage
    assert r.object == "text_completion"
    assert text == r.choices[0].text
    assert usage.completion_tokens == r.usage.completion_tokens
    assert r.usage.prompt_tokens == count_text("The optical link carries")


async def test_token_id_prompt_counts_ids(site: SimSite) -> None:
    r = await client(site).completions.create(model=MODEL, prompt=[1, 2, 3, 4, 5], max_tokens=3)
    assert r.usage.prompt_tokens == 5


async def test_natural_length_stops_before_max_tokens(make_site) -> None:
    site = await make_site(natural_output_min=5, natural_output_max=9)
    r = await client(site).chat.completions.create(model=MODEL, messages=MSG, max_tokens=100)
    assert r.choices[0].finish_reason == "stop" and 5 <= r.usage.completion_tokens <= 9
    r2 = await client(site).chat.completions.create(model=MODEL, messages=MSG, max_tokens=3)
    assert r2.choices[0].finish_reason == "length" and r2.usage.completion_tokens == 3


async def test_stop_string_cuts_output(site: SimSite) -> None:
    c = client(site)
    base = await c.completions.create(model=MODEL, prompt="x", max_tokens=30, seed=1, extra_body={"ignore_eos": True})
    words = base.choices[0].text.split(" ")
    stop_word = " " + words[5]  # the 5th generated word (text starts with a space)
    r = await c.completions.create(model=MODEL, prompt="x", max_tokens=30, seed=1, stop=[stop_word], extra_body={"ignore_eos": True})
    assert r.choices[0].finish_reason == "stop"
    assert stop_word not in r.choices[0].text
    assert base.choices[0].text.startswith(r.choices[0].text)
    s = await c.completions.create(model=MODEL, prompt="x", max_tokens=30, seed=1, stop=[stop_word], stream=True, extra_body={"ignore_eos": True})
    streamed = "".join([ch.choices[0].text async for ch in s if ch.choices])
    assert streamed == r.choices[0].text


@pytest.mark.parametrize(
    "body, status, type_",
    [
        ({"messages": MSG, "max_tokens": -1}, 400, "BadRequestError"),
        ({"messages": MSG, "max_tokens": 0}, 400, "BadRequestError"),
        ({"messages": MSG, "max_tokens": 10**9}, 400, "BadRequestError"),
        ({"messages": MSG, "max_tokens": "ten"}, 400, "BadRequestError"),
        ({"max_tokens": 5}, 400, "BadRequestError"),
        ({"messages": [], "max_tokens": 5}, 400, "BadRequestError"),
        ({"messages": [{"content": "no role"}]}, 400, "BadRequestError"),
        ({"model": "gpt-9", "messages": MSG}, 404, "NotFoundError"),
        ({"messages": MSG, "n": 2}, 400, "BadRequestError"),
        ({"messages": MSG, "temperature": -1}, 400, "BadRequestError"),
        ({"messages": MSG, "stream_options": {"include_usage": True}}, 400, "BadRequestError"),
    ],
)
async def test_bad_chat_requests_get_vllm_shaped_errors(site: SimSite, body, status, type_) -> None:
    import orjson

    code, err = await post_raw(site.url + "/v1/chat/completions", orjson.dumps(body))
    assert code == status
    assert set(err) == {"object", "message", "type", "param", "code"}
    assert err["object"] == "error" and err["type"] == type_ and err["code"] == status
    assert isinstance(err["message"], str) and err["message"]


async def test_invalid_json_and_non_object(site: SimSite) -> None:
    for raw in (b"{not json", b"[1,2]", b""):
        code, err = await post_raw(site.url + "/v1/completions", raw)
        assert code == 400 and err["object"] == "error" and err["code"] == 400


async def test_prompt_beyond_context(make_site) -> None:
    site = await make_site(max_model_len=64)
    code, err = await post_raw(site.url + "/v1/completions", '{"prompt": "%s", "max_tokens": 1}' % ("word " * 200))
    assert code == 400 and "maximum context length is 64" in err["message"]
    with pytest.raises(openai.BadRequestError) as exc:
        await client(site).completions.create(model=MODEL, prompt="hi", max_tokens=64)
    assert exc.value.status_code == 400
    assert isinstance(exc.value.body, dict) and exc.value.body.get("type") == "BadRequestError"
    # The server is still healthy after bad input.
    r = await client(site).completions.create(model=MODEL, prompt="hi", max_tokens=3)
    assert r.usage.completion_tokens <= 3


async def test_openai_client_raises_typed_errors(site: SimSite) -> None:
    c = client(site)
    with pytest.raises(openai.BadRequestError):
        await c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=-5)
    with pytest.raises(openai.NotFoundError):
        await c.chat.completions.create(model="nope", messages=MSG)


async def test_metrics_count_what_was_served(make_site) -> None:
    site = await make_site(replicas=2)
    c = client(site)
    results = await asyncio.gather(
        *[c.chat.completions.create(model=MODEL, messages=MSG, max_tokens=10 + i, extra_body={"ignore_eos": True}) for i in range(6)]
    )
    status, text = await get_text(site.url + "/metrics")
    assert status == 200
    m = parse_metrics(text)
    for name in (
        "vllm:num_requests_running", "vllm:num_requests_waiting", "vllm:kv_cache_usage_perc",
        "vllm:gpu_cache_usage_perc", "DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE",
        "aigrid_sim_step_lateness_seconds_count", "aigrid_sim_clock_slip_seconds_total",
    ):
        assert name in m, name
    assert m["vllm:generation_tokens_total"] == sum(r.usage.completion_tokens for r in results)
    assert m["vllm:prompt_tokens_total"] == sum(r.usage.prompt_tokens for r in results)
    assert m["vllm:time_to_first_token_seconds_count"] == 6
    assert m["vllm:inter_token_latency_seconds_count"] == sum(r.usage.completion_tokens - 1 for r in results)
    assert m["vllm:request_success_total"] == 6
    assert m["vllm:num_requests_running"] == 0 and m["vllm:kv_cache_usage_perc"] == 0
    # Two replicas x one GPU: two DCGM series; vLLM pre-allocates, so FB used is high and constant.
    assert text.count("DCGM_FI_DEV_FB_USED{") == 2
    assert m["aigrid_sim_step_lateness_seconds_count"] == m["aigrid_sim_steps_total"] > 0
    # Both engines served (least-loaded dispatch).
    assert 'vllm:generation_tokens_total{engine="0"' in text and 'vllm:generation_tokens_total{engine="1"' in text
    per_engine = [float(l.rsplit(" ", 1)[1]) for l in text.splitlines() if l.startswith("vllm:generation_tokens_total{")]
    assert all(v > 0 for v in per_engine)
    status, dcgm = await get_text(site.url + "/metrics/dcgm")
    assert status == 200 and "DCGM_FI_DEV_GPU_UTIL{" in dcgm and "vllm:" not in dcgm


async def test_gauges_show_load_while_running(make_site) -> None:
    # A slow GPU (speed factor 0.05) keeps requests in flight long enough to observe.
    site = await make_site(gpu="L4", speed_factor=0.05, max_num_seqs=2, ignore_eos=True)
    c = client(site)
    tasks = [asyncio.create_task(c.completions.create(model=MODEL, prompt="hello " * 50, max_tokens=200)) for _ in range(5)]
    try:
        for _ in range(200):
            m = parse_metrics((await get_text(site.url + "/metrics"))[1])
            if m["vllm:num_requests_running"] == 2 and m["vllm:num_requests_waiting"] >= 1:
                break
            await asyncio.sleep(0.02)
        assert m["vllm:num_requests_running"] == 2
        assert m["vllm:num_requests_waiting"] >= 1
        assert 0 < m["vllm:kv_cache_usage_perc"] <= 1
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_client_disconnect_aborts_request(make_site) -> None:
    site = await make_site(gpu="L4", speed_factor=0.05, ignore_eos=True)
    async with aiohttp.ClientSession() as s:
        r = await s.post(site.url + "/v1/completions", json={"prompt": "hi", "max_tokens": 5000, "stream": True})
        await r.content.readline()  # first token arrived
        r.close()
    for _ in range(200):
        if site.replicas[0].core.num_running == 0:
            break
        await asyncio.sleep(0.02)
    core = site.replicas[0].core
    assert core.num_running == 0 and core.free_blocks == core.total_blocks
    assert core.stats.finished["abort"] == 1


async def test_link_delay_and_many_concurrent_streams(make_site) -> None:
    site = await make_site(link_delay_ms=5, link_jitter_ms=2, replicas=2)
    c = client(site)

    async def one(i: int) -> int:
        s = await c.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"q{i}"}], max_tokens=20, stream=True,
            stream_options={"include_usage": True}, extra_body={"ignore_eos": True},
        )
        n, usage = 0, None
        async for ch in s:
            if ch.choices and ch.choices[0].delta.content:
                n += 1
            if ch.usage:
                usage = ch.usage.completion_tokens
        assert usage == n
        return n

    counts = await asyncio.gather(*[one(i) for i in range(40)])
    assert counts == [20] * 40
    m = parse_metrics((await get_text(site.url + "/metrics"))[1])
    assert m["vllm:generation_tokens_total"] == 800


async def test_info_and_timing_endpoints(site: SimSite) -> None:
    await client(site).completions.create(model=MODEL, prompt="hi", max_tokens=4)
    import json

    info = json.loads((await get_text(site.url + "/sim/info"))[1])
    assert info["replica"]["gpu"] == "H100" and info["replica"]["kv_bytes_per_token"] == 131072
    timing = json.loads((await get_text(site.url + "/sim/timing?reset=1"))[1])
    assert timing["steps"] >= 1 and "lateness_p99_s" in timing
    timing2 = json.loads((await get_text(site.url + "/sim/timing"))[1])
    assert timing2["steps"] == 0


async def test_stream_interval_groups_tokens_without_changing_content(make_site) -> None:
    plain = await make_site(name="a")
    grouped = await make_site(name="b", stream_interval=4)

    async def run(site: SimSite) -> tuple[str, int]:
        s = await client(site).completions.create(model=MODEL, prompt="x", max_tokens=23, seed=3, stream=True,
                                                  stream_options={"include_usage": True}, extra_body={"ignore_eos": True})
        text, usage = "", 0
        async for ch in s:
            if ch.choices:
                text += ch.choices[0].text
            if ch.usage:
                usage = ch.usage.completion_tokens
        return text, usage

    assert await run(plain) == await run(grouped)
