"""The load map as a table (`aigrid status`). Building rows is pure; rich renders them."""

from __future__ import annotations

from rich.table import Table

from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.model import LoadSnapshot
from extproc.gateway.routing.views import build_views


def _f(x: float | None, fmt: str = "{:.2f}") -> str:
    return "-" if x is None else fmt.format(x)


def status_rows(config: GatewayConfig, snap: LoadSnapshot, now: float) -> list[dict[str, str]]:
    rows = []
    views = {v.name: v for v in build_views(config, snap, now)}
    for site in config.sites:
        load = snap.sites.get(site.name)
        v = views[site.name]
        if load is None:
            health = "no report"
        elif v.healthy is None:
            health = "stale"
        else:
            health = "healthy" if load.healthy else "unhealthy"
        rows.append(
            {
                "site": site.name,
                "role": site.role.value,
                "nodes": "-" if load is None else f"{load.healthy_nodes}/{load.nodes}",
                "gpus": "-" if load is None else str(load.gpus),
                "pressure": _f(v.pressure),
                "kv": _f(None if load is None else load.kv_cache_usage, "{:.0%}"),
                "running": "-" if load is None or load.requests_running is None else str(load.requests_running),
                "waiting": "-" if load is None or load.requests_waiting is None else str(load.requests_waiting),
                "gpu util": _f(None if load is None else load.gpu_utilization, "{:.0%}"),
                "rtt ms": f"{snap.measured_rtt_ms.get(site.name, site.rtt_ms):.1f}",
                "age s": _f(None if load is None else load.age_s(now), "{:.1f}"),
                "drained": "yes" if site.name in snap.drained else "no",
                "health": health,
            }
        )
    return rows


def status_table(config: GatewayConfig, snap: LoadSnapshot, now: float) -> Table:
    rows = status_rows(config, snap, now)
    t = Table(title=f"AI Grid load map ({'connected' if snap.connected else 'Redis not reachable'})")
    for col in rows[0].keys() if rows else ["site"]:
        t.add_column(col, justify="left" if col in ("site", "role", "drained", "health") else "right")
    for r in rows:
        style = "red" if r["health"] in ("unhealthy",) else ("yellow" if r["drained"] == "yes" or r["health"] in ("stale", "no report") else None)
        t.add_row(*r.values(), style=style)
    return t
