"""`ExternalProcessor.Process` at the protobuf level: what Envoy receives for each phase, without gRPC.

The rules checked (see the field notes): every answer sets its phase's oneof (an empty response is
"spurious", a 500); a routing header goes with `clear_route_cache`; a replaced body carries its
`content-length`; inspected requests ask for the buffered body (partial when chunked) unless the profile
reads no body, whose answer then comes in the headers phase.
"""

from __future__ import annotations

import json
import random

import pytest
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2 as pm
from envoy.service.ext_proc.v3 import external_processor_pb2 as ep

from extproc.gateway.config import load_config_text
from extproc.gateway.loadmap.model import LoadSnapshot, SiteLoad
from extproc.gateway.compression.seam import Rewrite, Skip
from extproc.gateway.server.gateway import Gateway
from extproc.gateway.server.processor import ExternalProcessor

CFG = """
sites:
  - {name: edge, role: edge, endpoints: ["127.0.0.1:1"], rtt_ms: 1, models: [small]}
  - {name: remote, role: remote, endpoints: ["127.0.0.1:2"], rtt_ms: 8, models: [small, large]}
"""


def idle(site: str) -> SiteLoad:
    return SiteLoad(site, 1, 1, 1, 0.0, 0.5, 0.05, 0, 0, 0, 0.0)


def make(extra: str = "", rewriter=None) -> tuple[ExternalProcessor, Gateway]:
    snap = LoadSnapshot(sites={"edge": idle("edge"), "remote": idle("remote")}, connected=True)
    gw = Gateway(load_config_text(CFG + extra), lambda: snap, rewriter=rewriter, clock=lambda: 0.1, rng=random.Random(0))
    gw.on_snapshot(snap)
    return ExternalProcessor(gw), gw


def headers_msg(method: str, path: str, *, length: int | None = None, eos: bool = False, extra: dict | None = None) -> ep.ProcessingRequest:
    req = ep.ProcessingRequest()
    hs = req.request_headers.headers.headers
    pairs = {":method": method, ":path": path, "content-type": "application/json", **(extra or {})}
    if length is not None:
        pairs["content-length"] = str(length)
    for k, v in pairs.items():
        h = hs.add()
        h.key, h.raw_value = k, v.encode()
    req.request_headers.end_of_stream = eos
    return req


def body_msg(body: bytes) -> ep.ProcessingRequest:
    req = ep.ProcessingRequest()
    req.request_body.body = body
    req.request_body.end_of_stream = True
    return req


async def run(proc: ExternalProcessor, *msgs: ep.ProcessingRequest) -> list[ep.ProcessingResponse]:
    async def it():
        for m in msgs:
            yield m

    return [r async for r in proc.Process(it(), None)]


def mutations(common) -> dict[str, str]:
    return {o.header.key: o.header.raw_value.decode() for o in common.header_mutation.set_headers}


def chat(model: str = "small", text: str = "hello") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}]}).encode()


async def test_inspected_request_asks_for_the_body_then_routes_with_it():
    proc, _ = make("routing: {profile: spill}\n")  # idle sites: the spill policy keeps it home (edge)
    body = chat()
    r1, r2 = await run(proc, headers_msg("POST", "/v1/chat/completions", length=len(body)), body_msg(body))
    assert r1.WhichOneof("response") == "request_headers"
    assert r1.mode_override.request_body_mode == pm.ProcessingMode.BUFFERED
    assert not r1.request_headers.response.header_mutation.set_headers
    assert r2.WhichOneof("response") == "request_body"
    common = r2.request_body.response
    m = mutations(common)
    assert m["x-aigrid-site"] == "edge" and m["x-aigrid-decision"]
    assert common.clear_route_cache
    assert "content-length" not in m and not common.HasField("body_mutation")


async def test_chunked_body_is_buffered_partially():
    proc, _ = make()
    (r1,) = await run(proc, headers_msg("POST", "/v1/chat/completions"))
    assert r1.mode_override.request_body_mode == pm.ProcessingMode.BUFFERED_PARTIAL


async def test_headers_only_profile_answers_in_the_headers_phase():
    proc, gw = make("routing: {profile: least_loaded}\n")
    assert not gw.needs_body
    (r1,) = await run(proc, headers_msg("POST", "/v1/chat/completions", length=400))
    assert r1.WhichOneof("response") == "request_headers"
    assert not r1.HasField("mode_override")
    common = r1.request_headers.response
    assert mutations(common)["x-aigrid-site"] in ("edge", "remote") and common.clear_route_cache
    assert sum(gw.router.sent_since_report.values()) == 1  # an inference request, counted in flight


async def test_passthrough_paths_route_on_load_in_the_headers_phase():
    proc, gw = make("routing: {profile: spill}\n")  # idle sites: the spill policy keeps it home (edge)
    (r,) = await run(proc, headers_msg("GET", "/health", eos=True))
    assert r.WhichOneof("response") == "request_headers" and r.request_headers.response.clear_route_cache
    assert mutations(r.request_headers.response)["x-aigrid-site"] == "edge"
    assert sum(gw.router.sent_since_report.values()) == 0  # not inference
    (r,) = await run(proc, headers_msg("POST", "/v1/embeddings", length=10))
    assert not r.HasField("mode_override") and sum(gw.router.sent_since_report.values()) == 1


async def test_rewritten_body_carries_its_content_length():
    class Halve:
        async def rewrite(self, req):
            return Rewrite(req.body[: len(req.body) // 2], {"x-aigrid-compression": "test"})

        async def close(self):
            pass

    proc, _ = make(rewriter=Halve())
    body = chat(text="x" * 300)
    _, r2 = await run(proc, headers_msg("POST", "/v1/chat/completions", length=len(body)), body_msg(body))
    common = r2.request_body.response
    assert common.body_mutation.body == body[: len(body) // 2]
    m = mutations(common)
    assert m["content-length"] == str(len(body) // 2) and m["x-aigrid-compression"] == "test"


async def test_skip_keeps_the_body_and_adds_its_headers():
    class Never:
        async def rewrite(self, req):
            return Skip("short", {"x-aigrid-compression": "skip=short"})

        async def close(self):
            pass

    proc, _ = make(rewriter=Never())
    body = chat()
    _, r2 = await run(proc, headers_msg("POST", "/v1/chat/completions", length=len(body)), body_msg(body))
    common = r2.request_body.response
    assert not common.HasField("body_mutation") and mutations(common)["x-aigrid-compression"] == "skip=short"


async def test_model_list_and_unknown_model_are_immediate_answers():
    proc, gw = make()
    (r,) = await run(proc, headers_msg("GET", "/v1/models", eos=True))
    assert r.WhichOneof("response") == "immediate_response"
    assert r.immediate_response.status.code == 200
    assert [m["id"] for m in json.loads(r.immediate_response.body)["data"]] == ["large", "small"]
    body = chat(model="nope")
    _, r2 = await run(proc, headers_msg("POST", "/v1/chat/completions", length=len(body)), body_msg(body))
    assert r2.WhichOneof("response") == "immediate_response" and r2.immediate_response.status.code == 404
    assert json.loads(r2.immediate_response.body)["error"]["type"] == "NotFoundError"
    assert sum(gw.router.sent_since_report.values()) == 0  # nothing was sent anywhere


async def test_large_model_goes_where_it_is_served():
    proc, _ = make()
    body = chat(model="large")
    _, r2 = await run(proc, headers_msg("POST", "/v1/chat/completions", length=len(body)), body_msg(body))
    assert mutations(r2.request_body.response)["x-aigrid-site"] == "remote"


@pytest.mark.parametrize("phase", ["response_headers", "response_body", "request_trailers", "response_trailers"])
async def test_other_phases_continue_unchanged(phase):
    proc, _ = make()
    req = ep.ProcessingRequest()
    getattr(req, phase).SetInParent()
    (r,) = await run(proc, req)
    assert r.WhichOneof("response") == phase


async def test_a_processor_bug_answers_continue_and_is_counted(monkeypatch):
    proc, gw = make()

    def boom(*a, **k):
        raise RuntimeError("bug")

    monkeypatch.setattr(gw, "inspect", boom)
    (r,) = await run(proc, headers_msg("POST", "/v1/chat/completions", length=10))
    assert r.WhichOneof("response") == "request_headers"
    assert not r.request_headers.response.header_mutation.set_headers
    assert gw.metrics.errors.labels("request_headers")._value.get() == 1
