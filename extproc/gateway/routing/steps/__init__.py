"""Built-in routing steps, one module (or package, when a step has parts) per step, registered by type name
on import (see `extproc.gateway.routing.registry`). `docs/routing.md` says how to write one."""

from extproc.gateway.routing.steps import (  # noqa: F401
    affinity,
    bounded,
    default_only,
    filters,
    gie,
    least_pressure,
    pickers,
    prefix_cache,
    realtime,
    slo,
    spill,
    ttft,
)
