"""Per-site report channels through a real redis-server with no ACL (the reader's own checks, which hold
whatever Redis allows): a report on one site's channel naming another site is refused and counted, the
shared channel of agents from before per-site channels stays readable during an upgrade but only as a
hint (the site's key is what is applied), and it can be switched off."""

from __future__ import annotations

import asyncio
import time

from agent_helpers import RedisProc, reading, wait_for

from extproc.wire.loadreport.codec import encode_report
from extproc.wire.loadreport.keys import RedisKeys
from extproc.wire.loadreport.load_report_pb2 import EngineStats, NodeLoadReport
from extproc.wire.redisconn.settings import RedisSettings

KEYS = RedisKeys()


def _settings(r: RedisProc, **kw: object) -> RedisSettings:
    # A long resync: whatever the test sees arrived by push, not by the full read.
    return RedisSettings(url=r.url, resync_interval_s=60, **kw)  # type: ignore[arg-type]


def _report(site: str, node: str, running: int, seq: int = 1) -> bytes:
    return encode_report(NodeLoadReport(
        site=site, node=node, agent_id="a1", sequence=seq, sent_unix_ms=int(time.time() * 1000),
        interval_ms=250, ttl_ms=30_000, healthy=True,
        engine=EngineStats(endpoints=1, requests_running=running, requests_waiting=0, kv_cache_usage=0.1)))


def test_channel_and_pattern_names() -> None:
    k = RedisKeys("p")
    assert k.site_reports_channel("edge") == "p:reports:edge"
    assert k.site_of_reports_channel("p:reports:edge") == "edge"
    assert k.site_of_reports_channel("p:reports") is None and k.site_of_reports_channel("p:reports:") is None
    assert k.site_of_reports_channel("q:reports:edge") is None
    assert k.site_reports_pattern == "p:reports:*"


async def test_site_channels_carry_their_own_site_only(redis_proc: RedisProc) -> None:
    c = redis_proc.client()
    async with reading(_settings(redis_proc)) as reader:
        await wait_for(lambda: reader.connected, what="reader connected")
        # Each site's report on its own channel reaches the map (the reader reads every site).
        for _ in range(100):
            c.publish(KEYS.site_reports_channel("edge"), _report("edge", "n1", 3))
            c.publish(KEYS.site_reports_channel("remote"), _report("remote", "n1", 5))
            if {"edge", "remote"} <= reader.snapshot.sites.keys():
                break
            await asyncio.sleep(0.02)
        assert reader.snapshot.sites["edge"].requests_running == 3
        assert reader.snapshot.sites["remote"].requests_running == 5
        # A report naming remote on edge's channel: refused, counted, the map unchanged.
        c.publish(KEYS.site_reports_channel("edge"), _report("remote", "n1", 999, seq=2))
        await wait_for(lambda: reader.refused["wrong_channel"] == 1, what="refusal counted")
        assert reader.snapshot.sites["remote"].requests_running == 5
    c.close()


async def test_shared_channel_is_a_hint_checked_against_the_sites_key(redis_proc: RedisProc) -> None:
    c = redis_proc.client()
    async with reading(_settings(redis_proc)) as reader:
        await wait_for(lambda: reader.connected, what="reader connected")
        # An agent from before the upgrade: SET its key, PUBLISH on the shared channel. Applied at once.
        honest = _report("edge", "n1", 4)
        c.set(KEYS.report("edge", "n1"), honest, px=30_000)
        c.publish(KEYS.reports_channel, honest)
        await wait_for(lambda: "edge" in reader.snapshot.sites, what="legacy push applied")
        assert reader.snapshot.sites["edge"].requests_running == 4 and not reader.refused
        # Someone who may publish there but not write edge's keys claims edge is idle: refused, counted;
        # the key's own report stands.
        c.publish(KEYS.reports_channel, _report("edge", "n1", 0, seq=9))
        await wait_for(lambda: reader.refused["not_its_key"] == 1, what="forged push refused")
        assert reader.snapshot.sites["edge"].requests_running == 4
        # A node that has no key at all does not appear.
        c.publish(KEYS.reports_channel, _report("remote", "ghost", 0))
        await wait_for(lambda: reader.refused["not_its_key"] == 2, what="keyless push refused")
        assert "remote" not in reader.snapshot.sites
    c.close()


async def test_shared_channel_can_be_switched_off_after_the_upgrade(redis_proc: RedisProc) -> None:
    c = redis_proc.client()
    async with reading(_settings(redis_proc, read_shared_reports_channel=False)) as reader:
        await wait_for(lambda: reader.connected, what="reader connected")
        r = _report("edge", "n1", 4)
        c.set(KEYS.report("edge", "n1"), r, px=30_000)
        # Nobody listens on the shared channel any more; edge's own channel still works.
        assert c.publish(KEYS.reports_channel, r) == 0
        for _ in range(100):
            c.publish(KEYS.site_reports_channel("edge"), r)
            if "edge" in reader.snapshot.sites:
                break
            await asyncio.sleep(0.02)
        assert "edge" in reader.snapshot.sites
    c.close()
