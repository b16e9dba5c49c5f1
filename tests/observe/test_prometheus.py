"""A real Prometheus (Debian's package) scrapes the gateway, Envoy and the simulated sites after real
traffic (compressed requests among it); every query of the shipped Grafana dashboard must return data
through Prometheus' HTTP API, and promtool accepts the shipped scrape config and alert rules (and their
unit tests)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

from harness import chat_body, http, wait_until
from simstack import metric_sum, wait_envoy_ready
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec
from extproc.gateway.observe.request import compression_estimate, prompt_tokens_saved
from extproc.tools.stack.procs import free_port, http_ok

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "aigrid.json"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
RULES = ROOT / "deploy" / "prometheus" / "aigrid-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "aigrid-alerts.test.yml"


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not installed (deploy/install.sh installs Debian's prometheus package)"
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def test_promtool_accepts_the_shipped_config_and_rules_and_the_alerts_fire():
    for args in (["check", "config", str(SCRAPE)], ["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        r = subprocess.run([_tool("promtool"), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def _prom_config(tmp: Path, gw, sites: dict[str, int]) -> Path:  # type: ignore[no-untyped-def]
    """The shipped scrape config with this test's ports and a 1 s interval (jobs and labels unchanged)."""
    cfg = yaml.safe_load(SCRAPE.read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["rule_files"] = [str(RULES)]
    targets = {
        "aigrid-gateway": [{"targets": [f"127.0.0.1:{gw.metrics_port}"]}],
        "aigrid-envoy": [{"targets": [f"127.0.0.1:{gw.admin_port}"]}],
        "aigrid-sites": [{"targets": [f"127.0.0.1:{p}"], "labels": {"site": s}} for s, p in sites.items()],
    }
    for job in cfg["scrape_configs"]:
        job["static_configs"] = targets[job["job_name"]]
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def check_saved_tokens_from_real_usage(gw) -> None:  # type: ignore[no-untyped-def]
    """A long RAG prompt, compressed: the saved-token counter is the site's real prompt count (usage)
    scaled by the compressor's before/after estimate, which the client sees in its compression header."""
    item = synth_rag_item(random.Random(3), SyntheticRagSpec(prompt_tokens={"median": 2500, "sigma": 0.1, "min": 2000, "max": 3000},
                                                    documents_min=6, documents_max=6, japanese_share=0.0))
    r = gw.post("/v1/chat/completions", json.dumps({"model": MODEL, "max_tokens": 8, "messages": rag_messages(item)}).encode())
    assert r.status == 200, r.body[:300]
    est = compression_estimate(r.headers.get("x-aigrid-compression"))
    assert est is not None and est[1] < est[0], r.headers.get("x-aigrid-compression")
    real_prompt = json.loads(r.body)["usage"]["prompt_tokens"]
    site = r.headers["x-aigrid-site"]
    expected = (prompt_tokens_saved(real_prompt, est), real_prompt)
    assert expected[0] > 0

    def saved() -> tuple[float, float]:
        t = gw.metrics()
        return (metric_sum(t, "aigrid_prompt_tokens_saved_total", site=site),
                metric_sum(t, "aigrid_compressed_prompt_tokens_total", site=site))

    wait_until(lambda: saved() == expected, 10, f"saved tokens counted ({saved()} vs {expected})")


def test_every_dashboard_query_returns_data_after_real_traffic(sim_stack_factory, tmp_path):
    st = sim_stack_factory()
    gw = st.add_gateway(
        extra={
            # Compression (coarse step, fixed rate) so the saved-token panels see real savings.
            "compression": {"enabled": True, "ranker": "bm25", "fixed_rate": 0.5, "break_even": False,
                            "min_prompt_tokens": 200, "deadline_ms": 5000},
            "observability": {"usage": True, "inject_stream_usage": True, "client_headers": ["site", "compression"]},
        },
        strategy="least_loaded",
    )
    wait_envoy_ready(gw)
    st.publish_idle(gw)
    port = free_port()
    prom = st.group.start(
        "prometheus",
        [_tool("prometheus"), f"--config.file={_prom_config(tmp_path, gw, st.sites)}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
    )
    prom.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), 30, "prometheus ready")

    def query(expr: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        r = json.loads(http("GET", url).body)
        assert r["status"] == "success", (expr, r)
        return r["data"]["result"]

    # A first scrape before traffic, so rates have a zero to start from.
    wait_until(lambda: len(query('up == 1')) == 4, 20, "all four targets up")

    def one(i: int):  # type: ignore[no-untyped-def]
        extra = {"stream": True, "max_tokens": 8 + i} if i % 2 else {"max_tokens": 8 + i}
        return gw.post("/v1/chat/completions", chat_body(f"tell me about {i} " * (1 + i % 4), model=MODEL, **extra))

    for _ in range(2):  # two bursts a few scrapes apart: every rate() window then holds an increase
        with ThreadPoolExecutor(4) as pool:
            statuses = [(r.status, r.body[:120]) for r in pool.map(one, range(8))]
            assert all(s == 200 for s, _ in statuses), statuses
        wait_until(lambda: bool(query("sum(gen_ai_client_token_usage_count) > 0")), 15, "usage scraped")

    check_saved_tokens_from_real_usage(gw)
    missing: list[str] = []

    def all_have_data() -> bool:
        missing.clear()
        for title, expr in dashboard_queries():
            res = query(expr)
            if not res or all(v["value"][1] in ("NaN", "+Inf", "-Inf") for v in res):
                missing.append(f"{title}: {expr}")
        return not missing

    try:
        wait_until(all_have_data, 20, "every dashboard query to return data", interval=1.0)
    except AssertionError:
        raise AssertionError("queries without data:\n" + "\n".join(missing)) from None
    assert len(dashboard_queries()) >= 12
