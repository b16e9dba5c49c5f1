"""A whole local grid on one machine: Redis, GPU sites (simulated, or instant stand-ins), their load
agents, the ext_proc server and Envoy. Used by `aigrid up` and `aigrid demo`.

Ports: Envoy's listener and admin ports are the ones the operator asked for (a taken port is a clear error,
not a silent move); everything internal gets a free port.

Every child is supervised (`supervise()`, called by `aigrid up`'s loop): one that exits is restarted with
backoff while the rest keeps serving — with ext_proc down, Envoy fails open to the default route. The
ext_proc server can be replaced without losing a request (`rolling_restart_serve`): the new process binds
the same loopback port beside the old one (gRPC sets SO_REUSEPORT), and once it listens the old one gets
SIGTERM: health NOT_SERVING, GOAWAY on its connection (Envoy opens a new one, which only the new process
accepts), in-flight streams finish within `drain_grace_s`. One address in Envoy's config, no health
checking of two endpoints, no window where Envoy's choice of endpoint lags the drain.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from extproc.gateway.config import ConfigError, load_config
from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.envoyconf.render import render_envoy_yaml
from extproc.tools.sites import GridSite
from extproc.tools.stack.procs import (
    ManagedProcess,
    ProcessGroup,
    StackError,
    free_port,
    http_ok,
    port_is_free,
    port_open,
    python_argv,
    start_envoy,
    start_redis,
)
from extproc.wire.sites import SiteRole

# What `aigrid serve` prints once its gRPC server is up (extproc/gateway/server/main.py).
LISTENING_LINE = "aigrid serve: ext_proc listening on"

# Keys of aigrid.yaml the local stack owns: it starts the processes behind them on the ports it picked,
# so an operator's overlay (`aigrid up -c FILE`) may not move them (`--port` / `--admin-port` move Envoy's).
STACK_OWNED_KEYS: tuple[tuple[str, ...], ...] = (
    ("sites",), ("redis", "url"), ("gateway", "listen"), ("gateway", "metrics_listen"),
    ("envoy", "listen_address"), ("envoy", "listen_port"), ("envoy", "admin_port"),
)


def merge_overlay(base: dict, overlay: dict) -> dict:
    """`overlay` over `base`: mappings merge key by key, anything else (lists included) replaces."""
    out = dict(base)
    for k, v in overlay.items():
        out[k] = merge_overlay(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_overlay(path: Path) -> dict:
    """An operator's aigrid.yaml overlay: a mapping that sets none of the keys the stack owns."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise StackError(f"{path}: cannot read the overlay: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise StackError(f"{path}: not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise StackError(f"{path}: an overlay is a mapping of aigrid.yaml sections, not {type(data).__name__}")
    for key in STACK_OWNED_KEYS:
        node: object = data
        for part in key:
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            raise StackError(
                f"{path}: {'.'.join(key)} is set by aigrid up (it starts that process on a port it picks); "
                "remove it (Envoy's ports: --port / --admin-port)"
            )
    return data




DEFAULT_SITES: tuple[GridSite, ...] = (
    # An edge site next to the 5G core: one smaller GPU, no link delay.
    # Capacities scale with GPU speed: 8 concurrent requests per L40S, 24 per H100 (about their ratio of
    # bf16 FLOP/s, which bounds prefill of the RAG-heavy reference workload).
    GridSite(name="edge", role=SiteRole.edge, gpu="L40S", replicas=1, link_delay_ms=0.0, rtt_ms=1.0, running_capacity=8),
    # A remote site over the long-haul optical link: more GPUs, a few ms away.
    GridSite(name="remote", role=SiteRole.remote, gpu="H100", replicas=2, link_delay_ms=4.0, rtt_ms=8.0,
             running_capacity=48),
)


def simulator_available() -> bool:
    return importlib.util.find_spec("extproc.tools.sim.cli") is not None


def agent_available() -> bool:
    return importlib.util.find_spec("extproc.agent.cli") is not None


@dataclass
class LocalStack:
    workdir: Path
    sites: tuple[GridSite, ...] = DEFAULT_SITES
    envoy_port: int = 10000
    admin_port: int = 9901
    # "sim": GPU simulator sites with agents; "standin": instant responders, no load reports.
    upstream: str = "sim"
    policy: dict = field(default_factory=dict)
    compression: dict = field(default_factory=dict)
    agent_interval_ms: int = 250
    # Time dilation of the simulated sites (`aigrid sim --time-dilation`): every engine step takes k x its
    # modelled time; the sites' link delays are passed as they are (a dilated grid already scaled them).
    time_dilation: float = 1.0
    # Extra keys of each site's aigrid.yaml `sites[]` entry by site name (e.g. the twin's speeds).
    site_extra: dict = field(default_factory=dict)
    # Merged into aigrid.yaml's sections (e.g. {"envoy": {"access_log": True}}), for tests and benches.
    overrides: dict = field(default_factory=dict)
    # An operator's aigrid.yaml overlay (`aigrid up -c FILE`), merged last over the generated config and
    # checked with it like any config (read_overlay refuses the keys the stack owns).
    overlay: Path | None = None
    group: ProcessGroup = field(init=False)
    site_ports: dict[str, int] = field(default_factory=dict)
    redis_port: int = 0
    extproc_port: int = 0
    metrics_port: int = 0
    config_path: Path | None = None
    config: GatewayConfig | None = None
    serve_proc: ManagedProcess | None = None
    _serve_generation: int = 0

    def __post_init__(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.group = ProcessGroup(self.workdir / "logs")

    # -- config -------------------------------------------------------------------------------------------
    def _check_ports(self) -> None:
        for what, port in (("Envoy listener", self.envoy_port), ("Envoy admin", self.admin_port)):
            if not port_is_free(port, "127.0.0.1") or not port_is_free(port, "0.0.0.0"):
                raise StackError(f"{what} port {port} is already taken: stop whatever holds it or pick another port")
        if self.upstream == "sim" and not simulator_available():
            raise StackError("the GPU simulator (extproc.tools.sim) is not installed in this build; use --upstream standin")

    def write_config(self) -> Path:
        """Choose internal ports (first call) and write aigrid.yaml + envoy.yaml for the current policy."""
        if not self.site_ports:
            self.redis_port = free_port()
            self.extproc_port = free_port()
            self.metrics_port = free_port()
            self.site_ports = {s.name: free_port() for s in self.sites}
        cfg = {
            "sites": [s.gateway_site([f"127.0.0.1:{self.site_ports[s.name]}"], **self.site_extra.get(s.name, {}))
                      for s in self.sites],
            "policy": {"default_site": self.sites[0].name, **self.policy},
            "redis": {"url": f"redis://127.0.0.1:{self.redis_port}/0"},
            "gateway": {"listen": f"127.0.0.1:{self.extproc_port}", "metrics_listen": f"127.0.0.1:{self.metrics_port}"},
            "envoy": {"listen_address": "127.0.0.1", "listen_port": self.envoy_port, "admin_port": self.admin_port},
            # The local load generator (same host) plays the trusted front proxy that sets each request's
            # x-aigrid-priority; a client on any other address cannot (Envoy strips the header).
            "trust": {"sla_source": "header", "front_proxy_cidrs": ["127.0.0.1/32"]},
        }
        if self.compression:
            cfg["compression"] = self.compression
        for section, values in self.overrides.items():
            cfg.setdefault(section, {}).update(values)
        if self.overlay is not None:
            cfg = merge_overlay(cfg, read_overlay(self.overlay))
        self.config_path = self.workdir / "aigrid.yaml"
        self.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        try:
            self.config = load_config(str(self.config_path))
        except ConfigError as exc:
            if self.overlay is None:
                raise
            raise StackError(f"the config merged from {self.overlay} is invalid:\n{exc}") from None
        (self.workdir / "envoy.yaml").write_text(render_envoy_yaml(self.config))
        return self.config_path

    # -- processes ----------------------------------------------------------------------------------------
    def _start_site(self, s: GridSite) -> None:
        port = self.site_ports[s.name]
        if self.upstream == "sim":
            argv = python_argv(
                "-m", "extproc.cli", "--log-level", "WARNING", "sim", "--name", s.name, "--gpu", s.gpu, "--model", s.model,
                "--gpus-per-replica", str(s.gpus_per_replica), "--replicas", str(s.replicas),
                "--host", "127.0.0.1", "--port", str(port), "--link-delay-ms", str(s.one_way_ms),
                # The name the local grid's clients send is the one the site lists in /v1/models (its
                # agent reports that list, and the gateway answers 404 for a model no site lists).
                "--served-model-name", s.model,
                # The demo reads prompts as they arrived (answer retention after compression).
                "--record-prompts", "5000",
                "--time-dilation", str(self.time_dilation),
            )
        else:
            argv = python_argv("-m", "extproc.tools.stack.standin", "--name", s.name, "--port", str(port))
        p = self.group.start(f"site-{s.name}", argv, restart=True)
        p.wait_ready(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 60, f"site {s.name} /health")

    def _start_agent(self, s: GridSite) -> None:
        port = self.site_ports[s.name]
        argv = python_argv(
            "-m", "extproc.cli", "--log-level", "WARNING", "agent", "--site", s.name, "--node", f"{s.name}-node1",
            "--redis-url", f"redis://127.0.0.1:{self.redis_port}/0",
            "--vllm-url", f"http://127.0.0.1:{port}/metrics",
            "--dcgm-url", f"http://127.0.0.1:{port}/metrics/dcgm",
            "--no-nvml", "--interval-ms", str(self.agent_interval_ms),
        )
        p = self.group.start(f"agent-{s.name}", argv, restart=True)
        p.wait_ready(lambda: True, 1, "start")

    def start(self) -> None:
        self._check_ports()
        self.write_config()
        start_redis(self.group, self.redis_port, restart=True)
        for s in self.sites:
            self._start_site(s)
        if self.upstream == "sim" and agent_available():
            for s in self.sites:
                self._start_agent(s)
        self._start_serve()
        start_envoy(self.group, self.workdir / "envoy.yaml", self.admin_port, restart=True)

    def _serve_argv(self) -> list[str]:
        assert self.config_path is not None
        return python_argv("-m", "extproc.cli", "serve", "--config", str(self.config_path))

    def _start_serve(self) -> None:
        self.serve_proc = self.group.start("serve", self._serve_argv(), restart=True)
        self.serve_proc.wait_ready(
            lambda: port_open(self.extproc_port) and port_open(self.metrics_port), 120, "ext_proc listening"
        )

    def process(self, name: str) -> ManagedProcess:
        """A child by name (`redis`, `site-edge`, `agent-edge`, `serve`, `envoy`)."""
        for p in self.group.procs:
            if p.name == name:
                return p
        raise KeyError(f"no process {name!r}; running: {', '.join(p.name for p in self.group.procs)}")

    def supervise(self) -> list[str]:
        """One supervision pass over every child (restart what exited, with backoff)."""
        return self.group.supervise()

    def rolling_restart_serve(self, timeout: float = 120) -> ManagedProcess:
        """Replace the ext_proc server without losing a request (see the module docstring)."""
        old = self.serve_proc
        self._serve_generation += 1
        new = self.group.start(f"serve.{self._serve_generation}", self._serve_argv(), restart=True)
        # Both processes answer on the port now, so an open port proves nothing: wait for the new one's
        # own line (printed after its gRPC server started and health went SERVING).
        new.wait_ready(lambda: LISTENING_LINE in new.log_tail(50), timeout, "ext_proc listening (its log line)")
        self.serve_proc = new
        if old is not None:
            grace = self.config.gateway.drain_grace_s if self.config is not None else 10.0
            self.group.remove(old, grace=grace + 5)
        return new

    def restart_serve(self, policy: dict, compression: dict) -> None:
        """Same grid, same Envoy, another gateway policy: rewrite the config and restart `aigrid serve`.
        (The Envoy config does not depend on the policy, so Envoy keeps running.)"""
        self.policy, self.compression = dict(policy), dict(compression)
        if self.serve_proc is not None:
            self.group.remove(self.serve_proc)
        self.write_config()
        self._start_serve()

    def stop(self) -> None:
        self.group.stop_all()

    def __enter__(self) -> "LocalStack":
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.envoy_port}"
