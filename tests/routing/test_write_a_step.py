"""The worked example of docs/routing.md ("How to write a step") runs as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from extproc.gateway.config import ConfigError, load_config_text
from extproc.gateway.request.features import RequestFeatures
from extproc.gateway.routing.framework import RoutingContext
from extproc.gateway.routing.registry import REGISTRY, ProfileError, build_active_profile
from extproc.gateway.routing.views import SiteView
from extproc.wire.sites import SiteRole

DOC = (Path(__file__).resolve().parents[2] / "docs" / "routing.md").read_text(encoding="utf-8")
SECTION = DOC[DOC.index("## How to write a step"):DOC.index("## Built-in steps")]
CODE = re.search(r"```python\n(.*?)```", SECTION, re.S).group(1)
PROFILE = re.search(r"```yaml\n(.*?)```", SECTION, re.S).group(1)
SITES = """
sites:
  - {name: edge, role: edge, endpoints: ["127.0.0.1:1"], rtt_ms: 1}
  - {name: metro, role: regional, endpoints: ["127.0.0.1:2"], rtt_ms: 4}
  - {name: far, role: far, endpoints: ["127.0.0.1:3"], rtt_ms: 30}
"""


@pytest.fixture(scope="module", autouse=True)
def example_step():
    exec(compile(CODE, "docs/routing.md", "exec"), {"__name__": "docs_example"})
    yield REGISTRY["example_near"]
    del REGISTRY["example_near"]


def view(name: str, rtt: float, pressure: float, role: SiteRole) -> SiteView:
    return SiteView(name, role, rtt, False, True, pressure, 0.1)


def test_the_documented_profile_uses_the_step():
    cfg = load_config_text(SITES + PROFILE)
    profile = build_active_profile(cfg)
    assert [s.type_name for s in profile.filters][-1] == "example_near"
    views = [view("edge", 1, 0.9, SiteRole.edge), view("metro", 4, 0.5, SiteRole.regional), view("far", 30, 0.0, SiteRole.far)]
    d = profile.decide(RoutingContext(RequestFeatures(), views, cfg.policy, "edge", 0.5))
    # far is idle but 29 ms farther than the closest: filtered out; metro is the least loaded of the rest.
    assert d.site == "metro"


def test_its_parameters_are_checked_with_the_key():
    bad = yaml.safe_load(PROFILE)
    bad["routing"]["profiles"]["near_least_loaded"]["filters"][-1]["params"] = {"max_extra_ms": -1}
    with pytest.raises(ProfileError) as e:
        build_active_profile(load_config_text(SITES + yaml.safe_dump(bad)))
    assert e.value.key == "routing.profiles.near_least_loaded.filters.3.params.max_extra_ms"
    bad["routing"]["profiles"]["near_least_loaded"]["filters"][-1]["params"] = {"max_extra": 3}
    with pytest.raises(ProfileError, match="max_extra"):
        build_active_profile(load_config_text(SITES + yaml.safe_dump(bad)))
    with pytest.raises(ConfigError):
        load_config_text(SITES + "routing: {profile: 'bad name!'}\n")
