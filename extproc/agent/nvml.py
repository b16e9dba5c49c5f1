"""NVML through pynvml (nvidia-ml-py): a thin adapter that turns each GPU into a GpuSample.

Only this module touches NVML. It calls the pynvml module's functions by attribute at call time, so a test
on a host without a GPU can substitute the NVML library's functions alone and exercise everything else.
NVML calls block (they are C calls into the driver); the agent runs `sample()` in a worker thread.
"""

from __future__ import annotations

import logging
import math
from types import ModuleType

pynvml: ModuleType | None
try:
    import pynvml
except ModuleNotFoundError:  # the `agent` extra is not installed: `aigrid agent --no-nvml` still runs,
    pynvml = None  # and `aigrid --help` from a plain `pip install aigrid` must not fail on it

from extproc.agent.dcgm import GpuSample

log = logging.getLogger(__name__)


class NvmlUnavailable(RuntimeError):
    """No usable NVML on this host (no driver library, no GPU, no permission); the message says which."""


def _text(v: object) -> str:
    # pynvml returns str in current releases, bytes in old ones.
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v)


def _optional(what: str, fn, *args):  # type: ignore[no-untyped-def]
    """One field; a field the GPU does not support (NotSupported on many consumer boards) is None."""
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        log.debug("nvml %s unavailable: %s", what, exc)
        return None


class NvmlReader:
    def __init__(self) -> None:
        self._open = False

    def open(self) -> int:
        """Initialise NVML; returns the GPU count. Raises NvmlUnavailable with the reason."""
        if pynvml is None:
            raise NvmlUnavailable("pynvml is not installed (pip install 'aigrid[agent]', or run with --no-nvml)")
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise NvmlUnavailable(f"NVML init failed: {exc}") from None
        except OSError as exc:  # a broken driver install can surface as a loader error
            raise NvmlUnavailable(f"NVML library failed to load: {exc}") from None
        self._open = True
        try:
            count = int(pynvml.nvmlDeviceGetCount())
        except pynvml.NVMLError as exc:
            self.close()
            raise NvmlUnavailable(f"NVML device count failed: {exc}") from None
        if count <= 0:
            self.close()
            raise NvmlUnavailable("NVML sees no GPU")
        return count

    def close(self) -> None:
        if self._open:
            self._open = False
            try:
                pynvml.nvmlShutdown()
            except pynvml.NVMLError:
                pass

    def sample(self) -> list[GpuSample]:
        """Every GPU's current figures. An NVML error that loses a whole GPU raises pynvml.NVMLError
        (the caller marks the source stale): a GPU silently missing would look like less load."""
        out: list[GpuSample] = []
        count = int(pynvml.nvmlDeviceGetCount())
        for i in range(count):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            util = _optional("utilization", pynvml.nvmlDeviceGetUtilizationRates, h)
            mem = _optional("memory", pynvml.nvmlDeviceGetMemoryInfo, h)
            power_mw = _optional("power", pynvml.nvmlDeviceGetPowerUsage, h)
            temp = _optional("temperature", pynvml.nvmlDeviceGetTemperature, h, pynvml.NVML_TEMPERATURE_GPU)
            uuid = _optional("uuid", pynvml.nvmlDeviceGetUUID, h)
            name = _optional("name", pynvml.nvmlDeviceGetName, h)
            used = int(mem.used) if mem is not None else None
            total = int(mem.total) if mem is not None and int(mem.total) > 0 else None
            u = float(util.gpu) / 100.0 if util is not None else None
            out.append(
                GpuSample(
                    index=i,
                    uuid=_text(uuid) if uuid is not None else "",
                    name=_text(name) if name is not None else "",
                    # NVML reports whole percent 0..100; anything else is a driver glitch, dropped.
                    utilization=u if u is not None and 0.0 <= u <= 1.0 else None,
                    memory_used_bytes=used if used is not None and total is not None and used <= total else None,
                    memory_total_bytes=total,
                    power_watts=float(power_mw) / 1000.0 if power_mw is not None else None,
                    temperature_c=float(temp) if temp is not None and math.isfinite(float(temp)) else None,
                )
            )
        return out
