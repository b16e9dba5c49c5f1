"""Chunks that cut through SSE events and JSON: usage is still counted exactly, and a stream whose usage
the gateway asked for reaches the client byte-identical to what the upstream sends when not asked —
through real Envoy and `aigrid serve`, both observation paths. The upstream's piece sizes are chosen so
that held-back bytes plus part of a piece often have the piece's own length (see splitter.tricky_pieces):
a strip that compared lengths instead of bytes fails here."""

from __future__ import annotations

import json
import os

import pytest

from harness import Stack, chat_body, wait_until
from simstack import metric_sum, wait_envoy_ready
from splitter import COMPLETION, PROMPT, body_bytes, stream_bytes, tricky_pieces
from extproc.tools.stack.procs import ProcessGroup, free_port, http_ok, python_argv

HERE = os.path.dirname(__file__)


@pytest.mark.parametrize("via", ["access_log", "ext_proc"])
def test_split_chunks_count_exactly_and_strip_byte_exact(tmp_path, via):
    group = ProcessGroup(tmp_path / "logs")
    st = Stack(root=tmp_path, group=group, redis_port=free_port(), sites={"edge": free_port(), "remote": free_port()})
    try:
        st.start_redis()
        for name, port in st.sites.items():
            p = group.start(f"split-{name}", python_argv(os.path.join(HERE, "splitter.py"), "--port", str(port)))
            p.wait_ready(lambda port=port: http_ok(f"http://127.0.0.1:{port}/health"), 20, "splitter up")
        gw = st.add_gateway(extra={"observability": {"usage": True, "usage_via": via, "inject_stream_usage": True}})
        wait_envoy_ready(gw)
        st.publish_idle(gw)

        asked = gw.post("/v1/chat/completions", chat_body("a", stream=True, stream_options={"include_usage": True}))
        not_asked = gw.post("/v1/chat/completions", chat_body("b", stream=True))
        plain = gw.post("/v1/chat/completions", chat_body("c"))
        assert asked.body == stream_bytes(include_usage=True)
        assert not_asked.body == stream_bytes(include_usage=False)  # byte for byte: the usage chunk is gone
        assert json.loads(plain.body) == json.loads(body_bytes())

        def counted() -> tuple[float, float, float]:
            t = gw.metrics()
            return (
                metric_sum(t, "gen_ai_client_token_usage_sum", gen_ai_token_type="input"),
                metric_sum(t, "gen_ai_client_token_usage_sum", gen_ai_token_type="output"),
                metric_sum(t, "aigrid_usage_chunks_stripped_total"),
            )

        wait_until(lambda: counted() == (3 * PROMPT, 3 * COMPLETION, 1), 10, f"usage counted ({counted()})")
        # (stripped == 1: the upstream only writes a usage chunk when asked, so the gateway did ask.)
        if via == "ext_proc":
            # The pieces really reached Envoy one by one: the observer got far more messages than events.
            pieces = len(tricky_pieces(stream_bytes(True)))
            assert gw.stats()["http.aigrid.ext_proc.aigrid_observe.stream_msgs_sent"] > 2 * pieces
    finally:
        group.stop_all()
