"""A real local stack whose sites are the GPU simulator (`aigrid sim`), for tests that need real token
usage: redis-server, `aigrid serve`, Envoy and one `aigrid sim` process per site, all on loopback."""

from __future__ import annotations

import json
from pathlib import Path

from harness import Stack, http, wait_until
from extproc.tools.stack.procs import ProcessGroup, free_port, http_ok, python_argv


def make_sim_stack(root: Path, sites: tuple[str, ...] = ("edge", "remote")) -> Stack:
    group = ProcessGroup(root / "logs")
    st = Stack(root=root, group=group, redis_port=free_port(), sites={s: free_port() for s in sites})
    try:
        st.start_redis()
        for i, name in enumerate(sites):
            port = st.sites[name]
            p = group.start(
                f"sim-{name}",
                python_argv(
                    "-m", "extproc.cli", "--log-level", "WARNING", "sim", "--name", name, "--gpu", "H100",
                    "--model", "llama-3.1-8b", "--host", "127.0.0.1", "--port", str(port), "--seed", str(7 + i),
                    "--natural-output-min", "4", "--natural-output-max", "40",
                ),
            )
            p.wait_ready(lambda port=port: http_ok(f"http://127.0.0.1:{port}/health"), 30, f"sim {name} healthy")
            st.site_procs[name] = p
    except Exception:
        group.stop_all()
        raise
    return st


def sim_counters(st: Stack, site: str) -> tuple[int, int]:
    """(prompt tokens, generation tokens) the simulated site itself counted (its vLLM counters)."""
    text = http("GET", f"http://127.0.0.1:{st.sites[site]}/metrics").body.decode()
    prompt = gen = 0.0
    for line in text.splitlines():
        if line.startswith("vllm:prompt_tokens_total"):
            prompt += float(line.split()[-1])
        elif line.startswith("vllm:generation_tokens_total"):
            gen += float(line.split()[-1])
    return int(prompt), int(gen)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of every sample of `name` whose labels include `labels` (exposition text)."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            total += float(value)
    return total


def sse_events(body: bytes) -> list[bytes]:
    return [e[len(b"data: "):] for e in body.split(b"\n\n") if e.startswith(b"data: ")]


def wait_envoy_ready(gw) -> None:  # type: ignore[no-untyped-def]
    def ready() -> bool:
        try:
            s = gw.stats()
        except OSError:
            return False
        return all(s.get(f"cluster.site_{n}.membership_healthy", 0) >= 1 for n in ("edge", "remote"))

    wait_until(ready, 20, "Envoy sees both sites healthy")


__all__ = ["json", "make_sim_stack", "sim_counters", "metric_sum", "sse_events", "wait_envoy_ready"]
