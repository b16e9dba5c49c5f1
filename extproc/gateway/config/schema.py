"""The shape of aigrid.yaml. Every field has a default a newcomer can run with; every bound is checked."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from extproc.gateway.config.compression import CompressionSettings
from extproc.gateway.config.observability import ObservabilitySettings
from extproc.gateway.config.trust import ClientTls, ServerTls, TrustSettings
from extproc.wire.contract import CONVERSATION_HEADER, SITE_NAME
from extproc.wire.redisconn.settings import RedisSettings
from extproc.wire.sites import SiteRole

HostPort = Annotated[str, Field(pattern=r"^[^\s:]+:\d{1,5}$")]
# host:port, or a Unix socket as gRPC writes it (unix:/absolute/path): no port, file-system permissions.
ListenAddress = Annotated[str, Field(pattern=r"^([^\s:]+:\d{1,5}|unix:/\S+)$")]


class _Strict(BaseModel):
    # A typo in a key must fail loudly rather than silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)



class EngineSpeed(_Strict):
    """How fast one engine replica of a site runs, for the cost model's TTFT/TPOT predictions (routing
    `slo_*` steps): from the operator's own benchmark of the engine on that GPU (e.g. vLLM's
    `benchmark_serving` at batch 1 and at a busy batch)."""

    # Prompt tokens per second of one prefill (compute bound: one long prompt alone).
    prefill_tokens_per_s: float = Field(gt=0, le=10_000_000)
    # One decode step with a single running sequence, ms; and what each further sequence adds.
    decode_ms: float = Field(gt=0, le=10_000)
    decode_ms_per_seq: float = Field(default=0.0, ge=0, le=1_000)
    # KV-cache capacity of one replica in tokens (sizes the cost model's prefix index); None: unknown.
    kv_cache_tokens: int | None = Field(default=None, ge=1)
    # The context per sequence (tokens) the busy-batch benchmark ran at. A decode step reads every running
    # sequence's KV cache, so with this and `kv_cache_tokens` set the per-sequence cost scales with the
    # running sequences' mean context (reported KV usage x capacity / running); None: taken as measured.
    decode_context_tokens: int | None = Field(default=None, ge=1)


class SiteConfig(_Strict):
    name: str
    role: SiteRole = SiteRole.remote
    # Upstream endpoints of the site's inference servers (host:port); Envoy balances over them.
    endpoints: list[HostPort] = Field(min_length=1)
    # Configured round-trip time from this gateway, ms; a measured RTT (load agents) overrides it.
    rtt_ms: float = Field(default=1.0, ge=0, le=10_000)
    # Envoy cluster name; defaults to "site_<name>".
    cluster: str | None = None
    # Path Envoy's active health check requests (vLLM and SGLang both serve /health).
    health_path: str = "/health"
    # URL the gateway's RTT probe times; default http://<first endpoint><health_path>.
    probe_url: str | None = None
    # Running requests at which the site counts as full (pressure 1.0) when its engine reports no capacity
    # of its own: the concurrency where its latency SLO breaks, from the operator's own benchmark. vLLM
    # admits up to max_num_seqs (hundreds) while TTFT climbs long before, so KV usage and the waiting
    # queue alone see a compute-bound site as idle.
    running_capacity: int = Field(default=64, ge=1)
    # Models this site serves (the `model` of requests). Empty: whatever its agents report from the
    # engine's /v1/models, and with no report either, any model.
    models: list[Annotated[str, Field(min_length=1, max_length=256)]] = Field(default_factory=list)
    # Prompt tokens per second one request's prefill runs at here: the transport-aware TTFT estimate.
    prefill_tokens_per_s: float = Field(default=10_000.0, gt=0)
    # Engine replicas behind the endpoints (each with `speed`): the cost model spreads queued work over them.
    replicas: int = Field(default=1, ge=1, le=4096)
    # One replica's speeds for the cost model; None: its stated default (routing/costmodel.py), which the
    # decision reason and aigrid_cost_model_default_speed_total then say was used.
    speed: EngineSpeed | None = None
    # TLS from Envoy to this site's endpoints (and its health checks); None: plain HTTP.
    tls: ClientTls | None = None

    @field_validator("name")
    @classmethod
    def _name_ok(cls, v: str) -> str:
        if not SITE_NAME.match(v):
            raise ValueError("must be lowercase letters, digits, '-' or '_' (at most 63), e.g. 'edge'")
        return v

    @property
    def cluster_name(self) -> str:
        return self.cluster or f"site_{self.name}"


class PolicySettings(_Strict):
    # Deprecated: the older spelling of `routing.profile` (read for one release when that is unset).
    strategy: Literal["aigrid", "least_loaded", "default_only"] | None = None
    # Site for requests when nothing better is known (no fresh load data, ext_proc down).
    default_site: str | None = None
    # A report older than this is unknown load.
    stale_after_s: float = Field(default=3.0, gt=0, le=600)
    # RTTs within this many ms of the closest site count as equally close (then role, then name, decide):
    # measured RTTs jitter, and the home site must not flip on noise.
    rtt_tolerance_ms: float = Field(default=5.0, ge=0, le=1000)
    # A site at or above this pressure has no headroom: realtime and sticky traffic leave it.
    headroom_pressure: float = Field(default=0.85, gt=0, le=1.5)
    # Deprecated (read for one release): the spill step's bands, now its own parameters
    # (`routing.profiles.<p>.rules[spill].params`). Set here, they apply where the step's own do not.
    spill_on: float = Field(default=0.55, ge=0, le=1.5)
    spill_off: float = Field(default=0.45, ge=0, le=1.5)
    spill_full: float = Field(default=0.95, gt=0, le=2)
    max_spill: float = Field(default=0.9, ge=0, le=1)
    batch_spill_boost: float = Field(default=1.5, ge=1, le=10)
    # Conversation affinity (KV-cache reuse): remembered this long, at most this many conversations.
    affinity_ttl_s: float = Field(default=600, ge=0)
    affinity_max_entries: int = Field(default=100_000, ge=0)
    # Queue depth (waiting requests) per site that counts as full pressure, when the engine gives none.
    queue_ref: int = Field(default=32, ge=1)

    @model_validator(mode="after")
    def _bands(self) -> "PolicySettings":
        if self.spill_off > self.spill_on:
            raise ValueError("spill_off must be <= spill_on (hysteresis band)")
        if self.spill_full <= self.spill_on:
            raise ValueError("spill_full must be > spill_on")
        return self


# The profile `routing.profile` names when nothing does.
DEFAULT_PROFILE = "aigrid"
# Keys of `policy:` that are now the spill step's parameters.
DEPRECATED_SPILL_KEYS: tuple[str, ...] = ("spill_on", "spill_off", "spill_full", "max_spill", "batch_spill_boost")


class StepSpec(_Strict):
    """One step of a routing profile: its registered type, optional instance name, weight (scorers
    only) and parameters (checked against the step type's own schema when the profile is built)."""

    type: str = Field(min_length=1)
    name: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9_]{0,62}$")
    weight: float | None = Field(default=None, gt=0, le=1000)
    params: dict[str, Any] = Field(default_factory=dict)


StepRef = str | StepSpec


class ProfileSpec(_Strict):
    """filters → rules (first decision wins) → estimators → weighted scorers → picker. `filters` omitted:
    the default ones (not_drained, not_unhealthy, known_load). Scorers without a picker get max_score.
    Estimators each add one term (ms) to the predicted TTFT / TPOT a prediction picker (slo_slack) reads."""

    filters: list[StepRef] | None = None
    rules: list[StepRef] = Field(default_factory=list)
    estimators: list[StepRef] = Field(default_factory=list)
    scorers: list[StepRef] = Field(default_factory=list)
    picker: StepRef | None = None


class RoutingSettings(_Strict):
    # The active profile (default: aigrid). The one key that chooses it; `policy.strategy` is its
    # deprecated older spelling, read only when this is unset.
    profile: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    # Profiles of your own, or overrides of the built-in ones by name (extproc/gateway/routing/profiles.py).
    profiles: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")], ProfileSpec] = Field(default_factory=dict)
    # Draw a conversation's random split from its key (hash) instead of a random number: every gateway
    # replica then sends the same conversation to the same site under the same load, without talking.
    keyed_draw: bool = True
    # One decision in this many records per-step latency (aigrid_routing_step_seconds).
    step_timing_sample: int = Field(default=16, ge=1, le=1_000_000)


class ClassSlo(_Strict):
    # Time to first token and time per output token (p99 targets), ms; tpot None: no TPOT target.
    ttft_ms: float = Field(gt=0, le=3_600_000)
    tpot_ms: float | None = Field(default=None, gt=0, le=60_000)


class SloSettings(_Strict):
    """Service-level objectives per SLA class: the budgets the TTFT scorer and every report use."""

    realtime: ClassSlo = ClassSlo(ttft_ms=300, tpot_ms=40)
    standard: ClassSlo = ClassSlo(ttft_ms=1000, tpot_ms=60)
    batch: ClassSlo = ClassSlo(ttft_ms=10_000, tpot_ms=None)

    def for_class(self, sla: Any) -> ClassSlo:
        return getattr(self, str(getattr(sla, "value", sla)))



class GatewaySettings(_Strict):
    # ext_proc gRPC listen address: host:port, or unix:/path for a Unix socket (Envoy on the same host; the
    # socket file's permissions say who may connect; no TLS needed or allowed there).
    listen: ListenAddress = "127.0.0.1:50051"
    # Prometheus metrics (HTTP); empty string disables.
    metrics_listen: str = "127.0.0.1:9464"
    # Largest request body the gateway looks at; matched to Envoy's buffer limit and gRPC's max message.
    max_body_bytes: int = Field(default=8 * 1024 * 1024, ge=64 * 1024, le=256 * 1024 * 1024)
    # Seconds to let in-flight streams finish on SIGTERM.
    drain_grace_s: float = Field(default=10.0, ge=0, le=600)
    # Seconds between RTT probes of each site's health endpoint (0 disables; configured rtt_ms then rules).
    rtt_probe_interval_s: float = Field(default=2.0, ge=0, le=3600)
    # Header a client may use to keep a conversation together; otherwise a prefix hash is used.
    conversation_header: str = CONVERSATION_HEADER
    # How often this gateway publishes its per-site in-flight counts for its replicas (0: never, and
    # peers' counts are not read either). Replicas sharing one map then count each other's bursts.
    in_flight_publish_ms: int = Field(default=50, ge=0, le=10_000)
    # This replica's id in those messages; default: random per process.
    id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # TLS for the ext_proc port (with client_ca_path: only Envoys holding a client certificate that CA
    # signed may connect). Needed when Envoy is not on this host; on loopback it is optional.
    tls: ServerTls | None = None

    @model_validator(mode="after")
    def _unix_has_no_tls(self) -> "GatewaySettings":
        if self.tls is not None and self.listen.startswith("unix:"):
            raise ValueError("gateway.tls does not apply to a Unix socket (gateway.listen: unix:...)")
        return self


class EnvoySettings(_Strict):
    listen_address: str = "0.0.0.0"
    listen_port: int = Field(default=10000, ge=1, le=65535)
    admin_address: str = "127.0.0.1"
    admin_port: int = Field(default=9901, ge=1, le=65535)
    # ext_proc per-message deadline; sized for compression (the compressor's own deadline is shorter,
    # so Envoy's 504 is never the path a slow compression takes).
    message_timeout_ms: int = Field(default=2000, ge=50, le=60_000)
    # The most the processor may extend one message's timeout to (Envoy's max_message_timeout; the
    # processor sends override_message_timeout before it holds a request back, see slo_slack's hold_*).
    # 0: no extension; holds then end within what message_timeout_ms leaves.
    max_message_timeout_ms: int = Field(default=5000, ge=0, le=600_000)
    # Circuit breaker of the ext_proc cluster: above Envoy's default 1,024 concurrent streams, because
    # each long LLM request holds one stream.
    extproc_max_streams: int = Field(default=100_000, ge=1024)
    upstream_max_requests: int = Field(default=100_000, ge=1024)
    # Upstream request timeout; LLM responses stream for minutes.
    route_timeout_s: float = Field(default=600, ge=0)
    health_check_interval_ms: int = Field(default=1000, ge=100)
    # Where Envoy reaches the ext_proc server, when not gateway.listen (e.g. a container name:port).
    extproc_address: ListenAddress | None = None
    # JSON access log on stdout (method, path, status, site, cluster, duration).
    access_log: bool = False
    # TLS on the client listener (client_ca_path: clients must present a certificate).
    listener_tls: ServerTls | None = None
    # TLS (mutual, with cert_path/key_path) from Envoy to the ext_proc server; pairs with gateway.tls.
    extproc_tls: ClientTls | None = None


class GatewayConfig(_Strict):
    sites: list[SiteConfig] = Field(min_length=1)
    policy: PolicySettings = PolicySettings()
    redis: RedisSettings = RedisSettings()
    gateway: GatewaySettings = GatewaySettings()
    envoy: EnvoySettings = EnvoySettings()
    compression: CompressionSettings = CompressionSettings()
    routing: RoutingSettings = RoutingSettings()
    slo: SloSettings = SloSettings()
    # Where a request's SLA class may come from; by default the client's x-aigrid-priority is ignored.
    trust: TrustSettings = TrustSettings()
    observability: ObservabilitySettings = ObservabilitySettings()

    @model_validator(mode="after")
    def _cross_checks(self) -> "GatewayConfig":
        names = [s.name for s in self.sites]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"site names must be unique; repeated: {', '.join(dup)}")
        clusters = [s.cluster_name for s in self.sites]
        dup = sorted({c for c in clusters if clusters.count(c) > 1})
        if dup:
            raise ValueError(f"site cluster names must be unique; repeated: {', '.join(dup)}")
        if self.policy.default_site is not None and self.policy.default_site not in names:
            raise ValueError(
                f"policy.default_site {self.policy.default_site!r} is not a configured site ({', '.join(names)})"
            )
        return self

    @property
    def active_profile(self) -> str:
        return self.routing.profile or self.policy.strategy or DEFAULT_PROFILE

    def deprecations(self) -> list[str]:
        """What this config sets through a deprecated key, worded for the operator (the loader logs it)."""
        out = []
        if self.policy.strategy is not None:
            out.append(f"policy.strategy is deprecated: set routing.profile: {self.policy.strategy} instead"
                       + (" (routing.profile is set and wins)" if self.routing.profile else ""))
        bands = [k for k in DEPRECATED_SPILL_KEYS if k in self.policy.model_fields_set]
        if bands:
            out.append(f"policy.{', policy.'.join(bands)} deprecated: set them as the spill step's params "
                       "(routing.profiles.<profile>.rules: [{type: spill, params: {...}}]); read for one release")
        return out

    @property
    def default_site(self) -> str:
        """The configured default, else the first edge site, else the first site."""
        if self.policy.default_site:
            return self.policy.default_site
        for s in self.sites:
            if s.role is SiteRole.edge:
                return s.name
        return self.sites[0].name

    def site(self, name: str) -> SiteConfig:
        for s in self.sites:
            if s.name == name:
                return s
        raise KeyError(name)
