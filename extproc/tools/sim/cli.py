"""`aigrid sim`: run one or more simulated GPU sites (OpenAI-compatible, vLLM-shaped) in one process.

    aigrid sim --name edge --gpu L4 --model llama-3.1-8b --gpus-per-replica 1 --replicas 1 \\
               --host 127.0.0.1 --port 8001 [--link-delay-ms 5 --link-jitter-ms 1] [--speed-factor 1.0]
    aigrid sim --sites-file sites.yaml          # several sites, one process, one port each
    aigrid sim --list-profiles                  # GPUs and models the profiles file knows

A sites file is a YAML list of site mappings (or a mapping with a ``sites`` list) using the same option
names as the flags (``gpus_per_replica`` or ``gpus-per-replica``); flags given on the command line act as
defaults for every site in the file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from dataclasses import fields
from typing import Any

import yaml

from .config import SimSiteConfig
from .profiles import ProfileError, load_profiles
from .server import start_sim_sites

log = logging.getLogger("aigrid.sim")

# Flags that map 1:1 onto SimSiteConfig fields (dest name == field name).
_SITE_FLAGS: tuple[tuple[str, type, str], ...] = (
    ("name", str, "site name (labels, DCGM Hostname)"),
    ("gpu", str, "GPU profile: H100, H200, A100, A100-40GB, L40S, L4 (see --list-profiles)"),
    ("model", str, "model profile: llama-3.1-8b, qwen2.5-7b, llama-3.1-70b"),
    ("gpus_per_replica", int, "GPUs per replica (tensor parallel degree)"),
    ("replicas", int, "independent model replicas (one engine loop each)"),
    ("host", str, "listen address"),
    ("port", int, "listen port (0 picks a free one)"),
    ("link_delay_ms", float, "one-way network delay added to request arrival and to the response stream"),
    ("link_jitter_ms", float, "jitter: uniform +/- around the delay (netem-like), per request / per step"),
    ("speed_factor", float, "scale every simulated rate; 0.5 = a GPU half as fast, all ratios kept"),
    ("time_dilation", float, "every engine step takes K x its modelled time (link delay stays as given); default 1"),
    ("profiles", str, "profiles YAML file (default: the packaged extproc/tools/sim/profiles.yaml)"),
    ("served_model_name", str, "model name to serve (default: the profile's Hugging Face name)"),
    ("max_model_len", int, "context limit (default: model max, capped by KV capacity)"),
    ("max_num_seqs", int, "max sequences per batch (vLLM --max-num-seqs)"),
    ("max_num_batched_tokens", int, "token budget per step (vLLM --max-num-batched-tokens)"),
    ("gpu_memory_utilization", float, "fraction of GPU memory for weights+KV (vLLM default 0.9)"),
    ("natural_output_min", int, "shortest natural (EOS) answer in tokens when max_tokens allows"),
    ("natural_output_max", int, "longest natural (EOS) answer in tokens"),
    ("seed", int, "seed for natural lengths and jitter"),
    ("slip_threshold_ms", float, "beyond this lateness the clock re-anchors (reported as slip)"),
    ("lateness_p99_bound_ms", float, "a run is invalid if step lateness p99 exceeds this (GET /sim/timing; default 20)"),
    ("max_slip_s", float, "a run is invalid if clock slip exceeds this many seconds (default 0)"),
    ("stream_interval", int, "stream tokens in groups of N (vLLM --stream-interval; default 1)"),
    ("record_prompts", int, "keep the last N request bodies at GET /_aigrid/records (evaluation; 0 = off)"),
)


def register(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "sim",
        help="run simulated GPU inference sites (OpenAI-compatible, vLLM metrics, GPU-physics timing)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for dest, typ, help_ in _SITE_FLAGS:
        p.add_argument("--" + dest.replace("_", "-"), dest=dest, type=typ, default=None, help=help_)
    p.add_argument("--ignore-eos", action="store_true", default=None, help="always generate exactly max_tokens")
    p.add_argument(
        "--prefix-caching", dest="prefix_caching", action=argparse.BooleanOptionalAction, default=None,
        help="vLLM V1 automatic prefix caching (default on, as in vLLM; --no-prefix-caching turns it off)",
    )
    p.add_argument("--sites-file", default=None, help="YAML list of sites to host in this process")
    p.add_argument("--list-profiles", action="store_true", help="print the GPU and model profiles and exit")
    p.set_defaults(func=run)


def _flag_overrides(args: argparse.Namespace) -> dict[str, Any]:
    names = {f.name for f in fields(SimSiteConfig)}
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def site_configs(args: argparse.Namespace) -> list[SimSiteConfig]:
    flags = _flag_overrides(args)
    if not args.sites_file:
        return [SimSiteConfig(**flags)]
    with open(args.sites_file, encoding="utf-8") as fh:
        raw = yaml.safe_load(fh)
    if isinstance(raw, dict):
        raw = raw.get("sites")
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"{args.sites_file}: expected a non-empty list of sites (or a mapping with 'sites')")
    out = []
    for entry in raw:
        if not isinstance(entry, dict):
            raise ValueError(f"{args.sites_file}: each site must be a mapping")
        base = {k: v for k, v in flags.items() if k not in ("name", "port")}
        merged = {**base, **{k.replace("-", "_"): v for k, v in entry.items()}}
        out.append(SimSiteConfig.from_mapping(merged))
    ports = [c.port for c in out if c.port]
    if len(ports) != len(set(ports)):
        raise ValueError(f"{args.sites_file}: two sites share a port")
    return out


def _list_profiles(path: str | None) -> int:
    prof = load_profiles(path)
    print("GPUs:")
    for g in prof.gpus.values():
        print(f"  {g.key:10s} {g.product:26s} {g.memory_gb:6g} GB  {g.mem_bw_gb_s:6g} GB/s  {g.bf16_tflops:7g} TFLOP/s bf16")
    print("Models:")
    for m in prof.models.values():
        print(f"  {m.key:14s} {m.served_name:36s} {m.params / 1e9:5.2f}B  KV {m.kv_bytes_per_token // 1024} KiB/token")
    return 0


async def _serve(configs: list[SimSiteConfig]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):  # pragma: no cover - non-Unix
            pass
    sites = await start_sim_sites(configs)
    for s in sites:
        d = s.hw.describe()
        print(
            f"aigrid sim: site {s.config.name} listening on {s.url} "
            f"({s.config.replicas} x {s.hw.tp} x {s.hw.gpu.key}, {s.served_model_name}, "
            f"KV {d['kv_capacity_tokens']} tokens/replica, max_model_len {d['max_model_len']})",
            flush=True,
        )
    try:
        await stop.wait()
    finally:
        for s in sites:
            await s.stop()
    print("aigrid sim: stopped", flush=True)
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list_profiles:
        return _list_profiles(args.profiles)
    try:
        configs = site_configs(args)
        return asyncio.run(_serve(configs))
    except (ProfileError, ValueError, OSError) as exc:
        print(f"aigrid sim: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # pragma: no cover - signal handler normally catches it
        return 0


def main(argv: list[str] | None = None) -> int:
    """Run `sim` without the top-level `aigrid` command (python -m extproc.tools.sim.cli)."""
    parser = argparse.ArgumentParser(prog="aigrid")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["sim", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
