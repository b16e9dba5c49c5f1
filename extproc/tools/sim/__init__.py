"""GPU simulator: OpenAI-compatible inference sites whose timing follows GPU physics (issue 4).

In-process API (the CLI is `aigrid sim`, see ``extproc.tools.sim.cli``)::

    from extproc.tools.sim import SimSiteConfig, start_sim_site
    site = await start_sim_site(SimSiteConfig(name="edge", gpu="L4", model="llama-3.1-8b", port=0))
    print(site.url)          # http://127.0.0.1:<port>
    await site.stop()

The engine model is usable without any event loop: ``extproc.tools.sim.engine`` (``EngineCore``,
``VirtualSim``, ``run_closed_loop``, ``run_open_loop``) over ``extproc.tools.sim.profiles``.
"""

from .config import SimSiteConfig
from .engine import EngineCore, SimRequest, VirtualSim, run_closed_loop, run_open_loop
from .profiles import ProfileError, ReplicaHardware, load_profiles, make_hardware
from .server import SimSite, start_sim_site, start_sim_sites

__all__ = [
    "EngineCore",
    "ProfileError",
    "ReplicaHardware",
    "SimRequest",
    "SimSite",
    "SimSiteConfig",
    "VirtualSim",
    "load_profiles",
    "make_hardware",
    "run_closed_loop",
    "run_open_loop",
    "start_sim_site",
    "start_sim_sites",
]
