"""Decision headers on real responses through Envoy, each switchable; the JSON access log's fields; W3C
trace context passed to the site untouched."""

from __future__ import annotations

import json

from harness import chat_body, wait_until
from simstack import wait_envoy_ready

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _post(gw, **headers):  # type: ignore[no-untyped-def]
    return gw.post("/v1/chat/completions", chat_body("hi there"), headers=headers)


def test_decision_headers_switch_on_and_off_and_the_access_log(stack_factory):
    st = stack_factory()
    full = st.add_gateway(
        extra={"observability": {"client_headers": ["site", "decision", "overhead"]}, "envoy": {"access_log": True}}
    )
    site_only = st.add_gateway(extra={"observability": {"client_headers": ["site"]}})
    none = st.add_gateway()
    for gw in (full, site_only, none):
        wait_envoy_ready(gw)
    st.publish_idle(full, site_only, none)

    # A client's own copies are dropped before anything reads them.
    r = _post(full, **{"x-aigrid-overhead-ms": "forged", "x-aigrid-site": "remote", "traceparent": TRACEPARENT})
    assert r.status == 200
    assert r.headers["x-aigrid-site"] == "edge" == r.headers["x-served-by"]
    assert r.headers["x-aigrid-decision"].startswith("standard: home edge")
    overhead = float(r.headers["x-aigrid-overhead-ms"])  # the processor's own time, a number
    assert 0 < overhead < 10_000
    upstream = st.records("edge")[-1]["headers"]
    assert upstream["traceparent"] == TRACEPARENT

    r = _post(site_only)
    assert r.headers["x-aigrid-site"] == "edge"
    assert "x-aigrid-decision" not in r.headers and "x-aigrid-overhead-ms" not in r.headers

    r = _post(none)
    assert not [h for h in r.headers if h.startswith("x-aigrid")]

    # Envoy's JSON access log (stdout → the process log): request id, site, decision, model, tokens.
    log = full.envoy.log_path  # type: ignore[union-attr]

    def entry() -> dict | None:
        for line in reversed(log.read_text(errors="replace").splitlines()):
            if line.startswith("{") and '"path":"/v1/chat/completions"' in line.replace(" ", ""):
                return json.loads(line)
        return None

    wait_until(lambda: entry() is not None, 10, "access log line")
    e = entry()
    assert e is not None
    assert e["site"] == "edge" and e["decision"].startswith("standard: home edge")
    assert e["model"] == "m" and int(e["prompt_tokens_est"]) > 0
    assert len(e["request_id"]) >= 16
