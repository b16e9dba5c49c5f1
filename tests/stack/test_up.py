"""`aigrid up` as a new user runs it: a plain `aigrid up` (real Redis, simulated sites and their agents,
`aigrid serve`, Envoy) counts token usage and answers with the decision headers, and the usage it exports
(`gen_ai_client_token_usage`, at the metrics address it prints) equals the usage the responses carried,
for non-stream and stream requests. `aigrid up -c FILE` merges an operator's overlay over the generated
config and checks the result like any config."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from harness import chat_body, http, wait_until
from extproc.tools.sites import GridSite
from extproc.tools.stack.local import LocalStack, StackError
from extproc.tools.stack.procs import free_port

MODEL = GridSite(name="x").model


def _metric_sum(text: str, name: str, **labels: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            head, _, value = line.rpartition(" ")
            if all(f'{k}="{v}"' in head for k, v in labels.items()):
                total += float(value)
    return total


def _stream_usage(body: bytes) -> dict:
    events = [e[len(b"data: "):] for e in body.split(b"\n\n") if e.startswith(b"data: ")]
    assert events[-1] == b"[DONE]"
    (usage,) = [json.loads(e)["usage"] for e in events[:-1] if json.loads(e).get("usage")]
    return usage


@pytest.mark.slow
def test_plain_up_exports_the_usage_the_responses_carry(tmp_path: Path):
    port, admin = free_port(), free_port()
    log = (tmp_path / "up.out").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "extproc.cli", "up", "--port", str(port), "--admin-port", str(admin),
         "--workdir", str(tmp_path / "up")],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        out = lambda: (tmp_path / "up.out").read_text(errors="replace")  # noqa: E731
        wait_until(lambda: "Ctrl-C stops everything." in out() or proc.poll() is not None, 120, "aigrid up ready")
        assert proc.poll() is None, out()
        m = re.search(r"gateway metrics\s+(http://127\.0\.0\.1:\d+/metrics)", out())
        assert m, out()
        metrics_url = m.group(1)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        hdr = {"content-type": "application/json"}

        want = {"input": 0, "output": 0}
        for i in range(6):
            extra = {"max_tokens": 6 + i}
            if i % 2:
                extra |= {"stream": True, "stream_options": {"include_usage": True}}
            r = http("POST", url, chat_body(f"first steps on the grid, question {i} " * (1 + i), model=MODEL, **extra), hdr, timeout=60)
            assert r.status == 200, r.body[:300]
            # The decision headers are on for the local grid.
            assert r.headers.get("x-aigrid-site") in ("edge", "remote") and r.headers.get("x-aigrid-decision"), r.headers
            usage = _stream_usage(r.body) if i % 2 else json.loads(r.body)["usage"]
            want["input"] += usage["prompt_tokens"]
            want["output"] += usage["completion_tokens"]
        # A stream that did not ask for usage is counted too (asked on its behalf), and its client sees no
        # usage chunk: its tokens are on top of the responses' own, so it is sent after the check below.
        assert want["input"] > 0 and want["output"] > 0

        def exported() -> dict[str, int]:
            text = http("GET", metrics_url).body.decode()
            return {t: int(_metric_sum(text, "gen_ai_client_token_usage_sum", gen_ai_token_type=t)) for t in ("input", "output")}

        try:
            wait_until(lambda: exported() == want, 15, "exported usage == the responses' usage")
        except AssertionError:
            raise AssertionError(f"exported {exported()} != responses {want}") from None

        r = http("POST", url, chat_body("no usage asked", model=MODEL, stream=True, max_tokens=5), hdr, timeout=60)
        assert r.status == 200 and b'"usage"' not in r.body
        wait_until(lambda: exported()["output"] > want["output"], 15, "the unasked stream's usage counted")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        finally:
            log.close()
    assert proc.returncode == 0, (tmp_path / "up.out").read_text()
    assert "aigrid up: stopped" in (tmp_path / "up.out").read_text()


def _stack(tmp_path: Path, overlay: dict | str | None) -> LocalStack:
    path = None
    if overlay is not None:
        path = tmp_path / "mine.yaml"
        path.write_text(overlay if isinstance(overlay, str) else yaml.safe_dump(overlay), encoding="utf-8")
    return LocalStack(tmp_path / "up", upstream="standin", overrides={"observability": {"usage": True}}, overlay=path)


def test_an_overlay_merges_over_the_generated_config(tmp_path: Path):
    st = _stack(tmp_path, {"routing": {"profile": "least_loaded"}, "policy": {"stale_after_s": 7.5},
                           "observability": {"client_headers": ["site"]}})
    st.write_config()
    assert st.config is not None
    assert st.config.routing.profile == "least_loaded" and st.config.policy.stale_after_s == 7.5
    # Merged key by key: the generated default site and the stack's own observability stay.
    assert st.config.policy.default_site == "edge"
    assert st.config.observability.usage is True and st.config.observability.client_headers == ["site"]


@pytest.mark.parametrize("overlay,words", [
    ({"policy": {"stale_after_sec": 3}}, "stale_after_sec"),  # a typo: checked like any config
    ({"observability": {"inject_stream_usage": True, "usage": False}}, "usage"),
    ({"sites": []}, "sites is set by aigrid up"),
    ({"gateway": {"listen": "127.0.0.1:1"}}, "gateway.listen is set by aigrid up"),
    ({"envoy": {"listen_port": 80}}, "--port"),
    ("- a list\n", "mapping"),
    ("policy: [\n", "not valid YAML"),
])
def test_a_bad_overlay_is_refused_with_its_reason(tmp_path: Path, overlay, words):
    with pytest.raises(StackError, match=re.escape(words)):
        _stack(tmp_path, overlay).write_config()


def test_up_with_a_bad_overlay_exits_with_the_reason(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("policy: {stale_after_sec: 3}\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "extproc.cli", "up", "-c", str(bad), "--port", str(free_port()),
                        "--admin-port", str(free_port()), "--workdir", str(tmp_path / "up"), "--upstream", "standin"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "stale_after_sec" in r.stderr and str(bad) in r.stderr, r.stderr
