"""`aigrid agent`: run a GPU load agent for one node (or one site's worth of endpoints)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.json_format import MessageToJson
from pydantic import ValidationError

from extproc.agent.config import AgentConfig
from extproc.agent.publisher import Outgoing
from extproc.agent.runner import Agent
from extproc.wire.loadreport.codec import encode_report
from extproc.wire.redisconn.client import redacted_url
from extproc.wire.redisconn.settings import REDIS_URL_ENV_VAR

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "agent",
        help="publish this node's GPU / inference-server load into Redis",
        description="Poll NVML, vLLM/SGLang and DCGM exporter metrics; publish a load report to Redis "
        "every interval (key with TTL + pub/sub).",
    )
    p.add_argument("--config", type=Path, help="YAML file with the same keys (flags override it)")
    p.add_argument("--site", help="site name (required here or in --config)")
    p.add_argument("--node", help="node name (default: host name)")
    p.add_argument("--redis-url", help="redis://, rediss://, redis+sentinel://, redis+cluster:// URL "
                   "(default: $AIGRID_REDIS_URL, where a secret store can put the password)")
    p.add_argument("--key-prefix", help="Redis key prefix (default aigrid)")
    p.add_argument("--vllm-url", action="append", default=None, metavar="URL",
                   help="vLLM server (base URL or /metrics URL); repeatable")
    p.add_argument("--sglang-url", action="append", default=None, metavar="URL",
                   help="SGLang server (base URL or /metrics URL); repeatable")
    p.add_argument("--dcgm-url", action="append", default=None, metavar="URL",
                   help="DCGM exporter (e.g. http://host:9400); repeatable")
    p.add_argument("--nvml", action=argparse.BooleanOptionalAction, default=None,
                   help="read local GPUs through NVML (default on; disabled with a warning if absent)")
    p.add_argument("--interval-ms", type=int, help="publish interval (default 250)")
    p.add_argument("--ttl-ms", type=int, help="TTL of the node's key (default max(2000, 4 intervals))")
    p.add_argument("--scrape-timeout-ms", type=int, help="per-scrape deadline (default 500)")
    p.add_argument("--stale-after-ms", type=int, help="a source older than this is stale")
    p.add_argument("--once", action="store_true", help="collect once, print the report as JSON, publish it, exit")
    p.add_argument("--dry-run", action="store_true", help="with --once: do not publish")
    p.set_defaults(func=main)


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """YAML (if any) overlaid with the flags that were given. Raises ValueError naming the bad key."""
    data: dict[str, Any] = {}
    if args.config is not None:
        loaded = yaml.safe_load(args.config.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{args.config}: expected a mapping at the top level")
        data.update(loaded)
    flags = {
        "site": args.site, "node": args.node, "vllm_urls": args.vllm_url, "sglang_urls": args.sglang_url,
        "dcgm_urls": args.dcgm_url, "nvml": args.nvml, "interval_ms": args.interval_ms,
        "ttl_ms": args.ttl_ms, "scrape_timeout_ms": args.scrape_timeout_ms,
        "stale_after_ms": args.stale_after_ms,
    }
    data.update({k: v for k, v in flags.items() if v is not None})
    redis = dict(data.get("redis") or {})
    env_url = os.environ.get(REDIS_URL_ENV_VAR, "").strip()
    if args.redis_url:
        redis["url"] = args.redis_url
    elif env_url:
        redis["url"] = env_url
    if args.key_prefix:
        redis["key_prefix"] = args.key_prefix
    if redis:
        data["redis"] = redis
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        errors = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(errors) from None


async def _once(agent: Agent, dry_run: bool) -> int:
    await agent.open()
    try:
        await agent.poll_all()
        report = agent.build_report()
        if report is None:
            return 2
        print(MessageToJson(report, preserving_proto_field_name=True, indent=2))
        if not dry_run:
            item = (agent.key, encode_report(report), agent.config.effective_ttl_ms, agent.channel)
            try:

                await agent.publisher.send(Outgoing(*item))
            except Exception as exc:
                print(f"aigrid agent: publishing to redis failed: {exc}", file=sys.stderr)
                return 1
        return 0
    finally:
        await agent.close()


async def _run(agent: Agent) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await agent.open()
    print(f"aigrid agent: {agent.describe()} → {redacted_url(agent.config.redis.url)}", flush=True)
    await agent.run(stop)
    return 0


def main(args: argparse.Namespace) -> int:
    try:
        config = config_from_args(args)
    except (ValueError, OSError, yaml.YAMLError) as exc:
        print(f"aigrid agent: bad configuration: {exc}", file=sys.stderr)
        return 2
    agent = Agent(config)
    if args.once:
        return asyncio.run(_once(agent, args.dry_run))
    return asyncio.run(_run(agent))
