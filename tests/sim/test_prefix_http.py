"""Prefix caching and deterministic output length through the HTTP API (real aiohttp on loopback,
the official openai client). No timing is asserted."""

from __future__ import annotations

import aiohttp
from openai import AsyncOpenAI

from extproc.tools.sim import SimSite
from extproc.tools.tokens import chat_ids, count_chat, text_ids

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
DOCS = " ".join(f"Document {i}: the fiber route {i} runs through site {i % 7} with {i * 13} spans." for i in range(40))


def client(site: SimSite) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=site.url + "/v1", api_key="sim", max_retries=0)


def rag(question: str) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": "Answer from the documents."},
        {"role": "user", "content": DOCS + "\n\nQuestion: " + question},
    ]


async def metrics(site: SimSite) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(site.url + "/metrics") as r:
        text = await r.text()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, val = line.rpartition(" ")
            name = key.split("{", 1)[0]
            out[name] = out.get(name, 0.0) + float(val)
    return out


def test_chat_rendering_is_deterministic_and_matches_the_count() -> None:
    a, b = rag("Which site?"), rag("How many spans?")
    ia, ib = chat_ids(a), chat_ids(b)
    assert len(ia) == count_chat(a) and len(ib) == count_chat(b)
    common = next(i for i, (x, y) in enumerate(zip(ia, ib)) if x != y)
    assert common > 400 and ia == chat_ids(rag("Which site?"))
    # A different system message changes the very first blocks.
    other = [{"role": "system", "content": "Be brief."}, a[1]]
    assert chat_ids(other)[:16] != ia[:16]


async def test_repeated_chat_prompt_reports_cached_tokens_and_counters(site: SimSite) -> None:
    c = client(site)
    msgs = rag("Which site carries route 5?")
    n = count_chat(msgs)
    first = await c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, extra_body={"ignore_eos": True})
    second = await c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=8, extra_body={"ignore_eos": True})
    assert first.usage.prompt_tokens == second.usage.prompt_tokens == n
    assert first.usage.prompt_tokens_details.cached_tokens == 0
    # Every full block but the one holding the last prompt token (which is always recomputed).
    assert second.usage.prompt_tokens_details.cached_tokens == (n - 1) // 16 * 16
    m = await metrics(site)
    assert m["vllm:prefix_cache_queries_total"] == 2 * n
    assert m["vllm:prefix_cache_hits_total"] == (n - 1) // 16 * 16


async def test_shared_documents_hit_up_to_the_question_in_a_stream(site: SimSite) -> None:
    c = client(site)
    q1, q2 = rag("Which site carries route 5?"), rag("How many spans has route 9?")
    common = next(i for i, (x, y) in enumerate(zip(chat_ids(q1), chat_ids(q2))) if x != y)
    await c.chat.completions.create(model=MODEL, messages=q1, max_tokens=4)
    stream = await c.chat.completions.create(
        model=MODEL, messages=q2, max_tokens=4, stream=True, stream_options={"include_usage": True}
    )
    usage = None
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
    assert usage is not None
    assert usage.prompt_tokens_details.cached_tokens == common // 16 * 16


async def test_completions_share_the_cache_with_token_id_prompts(site: SimSite) -> None:
    c = client(site)
    prompt = DOCS + " Summarise."
    r1 = await c.completions.create(model=MODEL, prompt=prompt, max_tokens=4)
    ids = text_ids(prompt)
    # The same tokens sent as ids hit the blocks the text prompt filled.
    r2 = await c.completions.create(model=MODEL, prompt=ids, max_tokens=4, stream=True, stream_options={"include_usage": True})
    usage = None
    async for chunk in r2:
        if chunk.usage is not None:
            usage = chunk.usage
    assert r1.usage.prompt_tokens_details.cached_tokens == 0
    assert usage is not None and usage.prompt_tokens_details.cached_tokens == (len(ids) - 1) // 16 * 16


async def test_no_prefix_caching_recomputes_everything(make_site) -> None:
    site = await make_site(prefix_caching=False)
    c = client(site)
    msgs = rag("Which site?")
    for _ in range(2):
        r = await c.chat.completions.create(model=MODEL, messages=msgs, max_tokens=4)
        assert r.usage.prompt_tokens_details.cached_tokens == 0
    m = await metrics(site)
    assert m["vllm:prefix_cache_queries_total"] == 0 and m["vllm:prefix_cache_hits_total"] == 0
    async with aiohttp.ClientSession() as s, s.get(site.url + "/metrics") as resp:
        assert 'enable_prefix_caching="False"' in await resp.text()


async def test_seeded_request_has_one_length_at_every_site(make_site) -> None:
    """Two sites with different site seeds and GPUs: a request's seed alone decides its length."""
    short = {"natural_output_min": 4, "natural_output_max": 60}  # the same range at both: the contract
    a = await make_site(name="a", seed=1, gpu="H100", **short)
    b = await make_site(name="b", seed=2, gpu="L4", speed_factor=50.0, **short)
    lengths: dict[int, set[int]] = {}
    for seed in (11, 12, 13, 14):
        for site in (a, b, a):
            r = await client(site).chat.completions.create(
                model=MODEL, messages=rag("Which site?"), max_tokens=512, seed=seed
            )
            lengths.setdefault(seed, set()).add(r.usage.completion_tokens)
    assert all(len(v) == 1 for v in lengths.values()), lengths
    assert len({next(iter(v)) for v in lengths.values()}) > 1  # the seed does choose the length
    # Without a seed each site draws from its own sequence: the two sites disagree somewhere.
    unseeded = []
    for site in (a, b):
        r = [await client(site).chat.completions.create(model=MODEL, messages=rag("x"), max_tokens=512) for _ in range(3)]
        unseeded.append([x.usage.completion_tokens for x in r])
    assert unseeded[0] != unseeded[1]


async def test_non_integer_seed_is_refused(site: SimSite) -> None:
    async with aiohttp.ClientSession() as s:
        body = {"model": MODEL, "messages": rag("x"), "seed": "7"}
        async with s.post(site.url + "/v1/chat/completions", json=body) as r:
            assert r.status == 400 and (await r.json())["param"] == "seed"


async def test_planned_workload_requests_get_the_same_length_at_two_sites(make_site) -> None:
    """The load test's own request bodies (each with its seed) at two differently seeded sites."""
    from extproc.tools.loadtest.workloads import parse_spec, plan

    short = {"natural_output_min": 4, "natural_output_max": 60}
    a = await make_site(name="a", seed=5, **short)
    b = await make_site(name="b", seed=6, gpu="A100", **short)
    spec = parse_spec({
        "requests": 8, "rate": 10.0, "seed": 3, "stream": False, "model": MODEL,
        "rag": {"prompt_tokens": {"median": 300, "sigma": 0.2, "min": 200, "max": 400}},
        "max_tokens": {"median": 48, "sigma": 0.5, "min": 8, "max": 100},
    })
    got = {}
    async with aiohttp.ClientSession() as s:
        for p in plan(spec):
            for site in (a, b):
                async with s.post(site.url + "/v1/chat/completions", json=p.body) as r:
                    assert r.status == 200
                    body = await r.json()
                    got.setdefault(p.index, []).append(
                        (body["usage"]["completion_tokens"], body["choices"][0]["finish_reason"])
                    )
    assert all(x == y for x, y in got.values()), got
    assert {x[1] for x, _ in got.values()} == {"stop", "length"}  # both natural ends and caps occurred
