"""`aigrid status --watch`: the live load map, redrawn in place (rich.live).

It runs its own LoadMapReader (pub/sub + periodic resync), so what it shows is what a gateway reading that
Redis sees, ages included. The table itself is `aigrid status`'s (extproc/gateway/operator/table.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from extproc.gateway.config.schema import GatewayConfig
from extproc.gateway.loadmap.reader import LoadMapReader
from extproc.gateway.operator.table import status_table


def _render(config: GatewayConfig, reader: LoadMapReader, now: float) -> Group:
    snap = reader.snapshot
    parts: list[object] = [status_table(config, snap, now)]
    stale = {name: s.stale_sources for name, s in snap.sites.items() if s.stale_sources}
    for name, sources in sorted(stale.items()):
        parts.append(Text(f"{name}: stale sources: {', '.join(sources)}", style="yellow"))
    if not reader.connected:
        parts.append(Text("Redis not reachable: showing the last map, reconnecting", style="bold red"))
    return Group(*parts)  # type: ignore[arg-type]


async def watch_status(
    config: GatewayConfig,
    interval_s: float = 1.0,
    *,
    console: Console | None = None,
    iterations: int | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Redraw the live map every `interval_s` until Ctrl-C (or after `iterations` redraws, for tests)."""
    reader = LoadMapReader(config.redis, clock=clock)
    reader.start()
    drawn = 0
    try:
        with Live(_render(config, reader, clock()), console=console, auto_refresh=False) as live:
            while iterations is None or drawn < iterations:
                await asyncio.sleep(interval_s)
                live.update(_render(config, reader, clock()), refresh=True)
                drawn += 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        pass
    finally:
        try:
            # Bounded: a Redis client that swallows the cancellation must not keep the command alive.
            await asyncio.wait_for(reader.stop(), 5)
        except asyncio.TimeoutError:
            pass
    return 0
