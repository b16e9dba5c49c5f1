"""A real Prometheus (Debian's package) scrapes the gateway, Envoy and the simulated sites after real
traffic (compressed requests among it); every query of the shipped Grafana dashboard must return data
through Prometheus' HTTP API under each ingress's stat names: the standalone Envoy, and two more real
Envoys beside it carrying the names Envoy Gateway and Istio give the same clusters and filters
(ingress_names.py; Istio's with its stats matcher and the shipped gateway's proxyStatsMatcher), each
query with the dashboard's variables set as an operator of that ingress would set them. promtool
accepts the shipped scrape config and alert rules (and their unit tests)."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import re

import yaml

from harness import chat_body, http, wait_until
from ingress_names import as_envoy_gateway, as_istio, with_ports
from simstack import metric_sum, wait_envoy_ready
from extproc.tools.workload.synthetic import rag_messages, synth_rag_item
from extproc.tools.workload.spec import SyntheticRagSpec
from extproc.gateway.observe.request import compression_estimate, prompt_tokens_saved
from extproc.tools.stack.procs import free_port, http_ok, start_envoy

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "aigrid.json"
SCRAPE = ROOT / "deploy" / "prometheus" / "prometheus.yml"
MODEL = "meta-llama/Llama-3.1-8B-Instruct"
RULES = ROOT / "deploy" / "prometheus" / "aigrid-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "aigrid-alerts.test.yml"
ISTIO_GATEWAY = ROOT / "deploy" / "istio" / "ingress-gateway.yaml"
# Each ingress: the job its Envoy is scraped as here, and the dashboard's Ingress option for it.
INGRESSES = {"Standalone Envoy": "aigrid-envoy", "Envoy Gateway": "aigrid-envoy-eg", "Istio": "aigrid-envoy-istio"}


def _tool(name: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} not installed (deploy/install.sh installs Debian's prometheus package)"
    return path


def dashboard_queries() -> list[tuple[str, str]]:
    dash = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dash["panels"] for t in p["targets"]]


def dashboard_variables(ingress: str, envoy_job: str) -> dict[str, str]:
    """The variables as Grafana would set them for an operator of this ingress: the Ingress option of
    that name, the Envoy job it is scraped as, the other variables' defaults."""
    out = {}
    for v in json.loads(DASHBOARD.read_text())["templating"]["list"]:
        if v["type"] == "textbox":
            out[v["name"]] = v["query"]
        elif v["type"] == "custom":
            (opt,) = [o for o in v["options"] if o["text"] == ingress]
            out[v["name"]] = opt["value"]
    out["envoy_job"] = envoy_job
    return out


def substitute(expr: str, values: dict[str, str]) -> str:
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", lambda m: values[m.group(1)], expr)


def istio_inclusion_regexps() -> list[str]:
    """The proxyStatsMatcher of the shipped Istio ingress gateway's pod annotation."""
    dep = next(d for d in yaml.safe_load_all(ISTIO_GATEWAY.read_text()) if d and d["kind"] == "Deployment")
    pc = yaml.safe_load(dep["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"])
    return pc["proxyStatsMatcher"]["inclusionRegexps"]


def test_promtool_accepts_the_shipped_config_and_rules_and_the_alerts_fire():
    for args in (["check", "config", str(SCRAPE)], ["check", "rules", str(RULES)], ["test", "rules", str(RULE_TESTS)]):
        r = subprocess.run([_tool("promtool"), *args], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stdout + r.stderr


def _prom_config(tmp: Path, gw, sites: dict[str, int], others: dict[str, int]) -> Path:  # type: ignore[no-untyped-def]
    """The shipped scrape config with this test's ports and a 1 s interval (jobs and labels unchanged),
    plus one job per other ingress's Envoy (`others`: job -> admin port)."""
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
    envoy_job = next(j for j in cfg["scrape_configs"] if j["job_name"] == "aigrid-envoy")
    for name, admin in others.items():
        cfg["scrape_configs"].append({**envoy_job, "job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{admin}"]}]})
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


def test_every_dashboard_query_returns_data_under_each_ingress(sim_stack_factory, tmp_path):
    st = sim_stack_factory()
    gw = st.add_gateway(
        extra={
            # Compression (coarse step, fixed rate) so the saved-token panels see real savings.
            "compression": {"enabled": True, "ranker": "bm25", "fixed_rate": 0.5, "break_even": False,
                            "min_prompt_tokens": 200, "deadline_ms": 5000},
            # ext_proc: the observer sees every chunk (the time-per-output-chunk panel).
            "observability": {"usage": True, "usage_via": "ext_proc", "inject_stream_usage": True,
                              "client_headers": ["site", "compression"]},
        },
        strategy="least_loaded",
    )
    wait_envoy_ready(gw)
    st.publish_idle(gw)
    # Beside the standalone Envoy: the same config under Envoy Gateway's and Istio's stat names.
    sites = list(st.sites)
    rendered = gw.config_path.with_name(gw.config_path.stem + "-envoy.yaml")  # what the harness rendered
    others: dict[str, tuple[int, int]] = {}
    for job, shape in (("aigrid-envoy-eg", lambda y: as_envoy_gateway(y, sites)),
                       ("aigrid-envoy-istio", lambda y: as_istio(y, sites, istio_inclusion_regexps()))):
        listen, admin = free_port(), free_port()
        path = tmp_path / f"{job}.yaml"
        path.write_text(with_ports(shape(rendered.read_text()), listen, admin))
        start_envoy(st.group, path, admin, name=job)
        others[job] = (listen, admin)
    ports = {"aigrid-envoy": gw.envoy_port, **{j: p[0] for j, p in others.items()}}

    port = free_port()
    prom = st.group.start(
        "prometheus",
        [_tool("prometheus"), f"--config.file={_prom_config(tmp_path, gw, st.sites, {j: p[1] for j, p in others.items()})}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
    )
    prom.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/-/ready"), 30, "prometheus ready")

    def query(expr: str) -> list:
        url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        r = json.loads(http("GET", url).body)
        assert r["status"] == "success", (expr, r)
        return r["data"]["result"]

    # A first scrape before traffic, so rates have a zero to start from.
    wait_until(lambda: len(query('up == 1')) == 6, 20, "all six targets up")

    def one(args: tuple[int, int]):  # type: ignore[no-untyped-def]
        envoy_port, i = args
        extra = {"stream": True, "max_tokens": 8 + i} if i % 2 else {"max_tokens": 8 + i}
        body = chat_body(f"tell me about {i} " * (1 + i % 4), model=MODEL, **extra)
        return http("POST", f"http://127.0.0.1:{envoy_port}/v1/chat/completions", body, {"content-type": "application/json"})

    for _ in range(2):  # two bursts a few scrapes apart: every rate() window then holds an increase
        with ThreadPoolExecutor(4) as pool:
            jobs = [(p, i) for p in ports.values() for i in range(6)]
            statuses = [(r.status, r.body[:120]) for r in pool.map(one, jobs)]
            assert all(s == 200 for s, _ in statuses), statuses
        wait_until(lambda: bool(query("sum(gen_ai_client_token_usage_count) > 0")), 15, "usage scraped")

    check_saved_tokens_from_real_usage(gw)
    missing: list[str] = []

    def all_have_data() -> bool:
        missing.clear()
        for ingress, job in INGRESSES.items():
            values = dashboard_variables(ingress, job)
            for title, expr in dashboard_queries():
                res = query(substitute(expr, values))
                if not res or all(v["value"][1] in ("NaN", "+Inf", "-Inf") for v in res):
                    missing.append(f"{ingress}: {title}: {substitute(expr, values)}")
        return not missing

    try:
        wait_until(all_have_data, 20, "every dashboard query to return data under every ingress", interval=1.0)
    except AssertionError:
        raise AssertionError("queries without data:\n" + "\n".join(missing)) from None
    assert len(dashboard_queries()) >= 12
    # Each ingress's Envoy really carries its own names (the queries above found them, not another's).
    assert query('envoy_cluster_upstream_rq_total{job="aigrid-envoy-istio", cluster_name=~"outbound.*"}')
    assert not query('envoy_cluster_upstream_rq_total{job="aigrid-envoy-istio", envoy_cluster_name=~".+"}')
    assert query('envoy_http_ext_proc_failure_mode_allowed{job="aigrid-envoy-eg"}')
    assert not query('envoy_http_ext_proc_aigrid_failure_mode_allowed{job="aigrid-envoy-eg"}')
    assert query('envoy_cluster_upstream_rq_total{job="aigrid-envoy-eg", envoy_cluster_name="httproute/aigrid/aigrid/rule/0"}')
    # The standalone job's queries find nothing under another ingress's option: the variable matters.
    values = dashboard_variables("Istio", "aigrid-envoy")
    requests = next(e for t, e in dashboard_queries() if t.startswith("Requests per site"))
    assert not query(substitute(requests, values))
