"""The spill step's bands are its own parameters; the old `policy:` keys still apply for one release."""

from __future__ import annotations

import logging

import pytest

from extproc.gateway.config import ConfigError, load_config_text
from extproc.gateway.routing.registry import ProfileError, build_active_profile
from extproc.gateway.routing.steps.spill import Spill

SITES = """
sites:
  - {name: edge, role: edge, endpoints: ["127.0.0.1:1"], rtt_ms: 1}
  - {name: far, role: far, endpoints: ["127.0.0.1:2"], rtt_ms: 20}
"""


def spill_of(text: str) -> Spill:
    profile = build_active_profile(load_config_text(SITES + text))
    return next(s for s in profile.rules if isinstance(s, Spill))


def test_defaults_are_the_steps_own():
    b = spill_of("routing: {profile: spill}\n").bands
    assert (b.spill_on, b.spill_off, b.spill_full, b.max_spill, b.batch_spill_boost) == (0.55, 0.45, 0.95, 0.9, 1.5)


def test_params_set_the_bands():
    b = spill_of("""
routing:
  profile: mine
  profiles:
    mine: {rules: [{type: spill, params: {spill_on: 0.7, spill_off: 0.6, spill_full: 1.1}}]}
""").bands
    assert (b.spill_on, b.spill_off, b.spill_full) == (0.7, 0.6, 1.1)


def test_a_bad_band_is_refused_with_its_key():
    with pytest.raises(ProfileError) as e:
        spill_of("""
routing:
  profile: mine
  profiles:
    mine: {rules: [{type: spill, params: {spill_on: 0.4, spill_off: 0.5}}]}
""")
    assert e.value.key == "routing.profiles.mine.rules.0.params" and "spill_off must be <= spill_on" in str(e.value)


def test_deprecated_policy_keys_still_apply_and_warn(caplog):
    with caplog.at_level(logging.WARNING):
        cfg = load_config_text(SITES + "policy: {spill_on: 0.65, max_spill: 0.5}\nrouting: {profile: spill}\n", "old.yaml")
    assert any("policy.spill_on, policy.max_spill deprecated" in r.getMessage() and "old.yaml" in r.getMessage()
               for r in caplog.records)
    b = next(s for s in build_active_profile(cfg).rules if isinstance(s, Spill)).bands
    assert (b.spill_on, b.max_spill, b.spill_off) == (0.65, 0.5, 0.45)


def test_step_params_win_over_the_deprecated_keys():
    b = spill_of("""
policy: {spill_on: 0.65}
routing:
  profile: mine
  profiles:
    mine: {rules: [{type: spill, params: {spill_on: 0.8}}]}
""").bands
    assert b.spill_on == 0.8


def test_one_key_chooses_the_profile(caplog):
    assert load_config_text(SITES).active_profile == "aigrid"
    assert load_config_text(SITES + "routing: {profile: least_loaded}\n").active_profile == "least_loaded"
    with caplog.at_level(logging.WARNING):
        old = load_config_text(SITES + "policy: {strategy: default_only}\n")
    assert old.active_profile == "default_only"
    assert any("policy.strategy is deprecated" in r.getMessage() for r in caplog.records)
    both = load_config_text(SITES + "policy: {strategy: default_only}\nrouting: {profile: least_loaded}\n")
    assert both.active_profile == "least_loaded"
    with pytest.raises(ConfigError):
        load_config_text(SITES + "policy: {strategy: fastest}\n")
