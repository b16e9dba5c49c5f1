"""The live GPU load map: node reports from Redis → per-site load, as an immutable snapshot."""

from extproc.gateway.loadmap.model import GpuLoad, LoadSnapshot, NodeLoad, SiteLoad

__all__ = ["GpuLoad", "LoadSnapshot", "NodeLoad", "SiteLoad"]
