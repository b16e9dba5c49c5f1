from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GpuStats(_message.Message):
    __slots__ = ("index", "uuid", "name", "utilization", "memory_used_bytes", "memory_total_bytes", "power_watts", "temperature_c")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    UUID_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    UTILIZATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USED_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    POWER_WATTS_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    index: int
    uuid: str
    name: str
    utilization: float
    memory_used_bytes: int
    memory_total_bytes: int
    power_watts: float
    temperature_c: float
    def __init__(self, index: _Optional[int] = ..., uuid: _Optional[str] = ..., name: _Optional[str] = ..., utilization: _Optional[float] = ..., memory_used_bytes: _Optional[int] = ..., memory_total_bytes: _Optional[int] = ..., power_watts: _Optional[float] = ..., temperature_c: _Optional[float] = ...) -> None: ...

class EngineStats(_message.Message):
    __slots__ = ("endpoints", "requests_running", "requests_waiting", "kv_cache_usage", "max_running", "models")
    ENDPOINTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_RUNNING_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_WAITING_FIELD_NUMBER: _ClassVar[int]
    KV_CACHE_USAGE_FIELD_NUMBER: _ClassVar[int]
    MAX_RUNNING_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    endpoints: int
    requests_running: int
    requests_waiting: int
    kv_cache_usage: float
    max_running: int
    models: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, endpoints: _Optional[int] = ..., requests_running: _Optional[int] = ..., requests_waiting: _Optional[int] = ..., kv_cache_usage: _Optional[float] = ..., max_running: _Optional[int] = ..., models: _Optional[_Iterable[str]] = ...) -> None: ...

class NodeLoadReport(_message.Message):
    __slots__ = ("schema_version", "site", "node", "agent_id", "sequence", "sent_unix_ms", "interval_ms", "ttl_ms", "gpus", "engine", "healthy", "stale_sources")
    SCHEMA_VERSION_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    AGENT_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SENT_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_MS_FIELD_NUMBER: _ClassVar[int]
    GPUS_FIELD_NUMBER: _ClassVar[int]
    ENGINE_FIELD_NUMBER: _ClassVar[int]
    HEALTHY_FIELD_NUMBER: _ClassVar[int]
    STALE_SOURCES_FIELD_NUMBER: _ClassVar[int]
    schema_version: int
    site: str
    node: str
    agent_id: str
    sequence: int
    sent_unix_ms: int
    interval_ms: int
    ttl_ms: int
    gpus: _containers.RepeatedCompositeFieldContainer[GpuStats]
    engine: EngineStats
    healthy: bool
    stale_sources: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, schema_version: _Optional[int] = ..., site: _Optional[str] = ..., node: _Optional[str] = ..., agent_id: _Optional[str] = ..., sequence: _Optional[int] = ..., sent_unix_ms: _Optional[int] = ..., interval_ms: _Optional[int] = ..., ttl_ms: _Optional[int] = ..., gpus: _Optional[_Iterable[_Union[GpuStats, _Mapping]]] = ..., engine: _Optional[_Union[EngineStats, _Mapping]] = ..., healthy: _Optional[bool] = ..., stale_sources: _Optional[_Iterable[str]] = ...) -> None: ...
