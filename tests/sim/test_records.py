"""The simulator's bounded request recorder (how the demo measures answer retention after compression)."""

from __future__ import annotations

import base64

import aiohttp
import orjson


async def test_records_are_bounded_and_clearable(make_site):
    site = await make_site(record_prompts=2)
    async with aiohttp.ClientSession() as s:
        for i in range(3):
            body = {"model": site.served_model_name, "max_tokens": 2,
                    "messages": [{"role": "user", "content": f"prompt {i}"}]}
            async with s.post(site.url + "/v1/chat/completions", json=body,
                              headers={"x-aigrid-loadtest-id": f"id-{i}", "authorization": "secret"}) as r:
                assert r.status == 200
                await r.read()
        async with s.get(site.url + "/_aigrid/records") as r:
            recs = orjson.loads(await r.read())
        assert [rec["headers"]["x-aigrid-loadtest-id"] for rec in recs] == ["id-1", "id-2"]
        assert "authorization" not in recs[0]["headers"]  # only x-aigrid-* / x-request-id are kept
        assert orjson.loads(base64.b64decode(recs[-1]["body_b64"]))["messages"][0]["content"] == "prompt 2"
        async with s.delete(site.url + "/_aigrid/records") as r:
            assert r.status == 200
        async with s.get(site.url + "/_aigrid/records") as r:
            assert orjson.loads(await r.read()) == []


async def test_recording_off_by_default(make_site):
    site = await make_site()
    async with aiohttp.ClientSession() as s:
        body = {"model": site.served_model_name, "max_tokens": 2, "messages": [{"role": "user", "content": "x"}]}
        async with s.post(site.url + "/v1/chat/completions", json=body) as r:
            await r.read()
        async with s.get(site.url + "/_aigrid/records") as r:
            assert orjson.loads(await r.read()) == []
