"""Gateways' in-flight messages: codec refusals and the peer table. Pure."""

from __future__ import annotations

import pytest

from extproc.gateway.loadmap.peers import PeerMessageRejected, PeerTable, decode_in_flight, encode_in_flight


def test_roundtrip_drops_zero_counts():
    assert decode_in_flight(encode_in_flight("gw-1", {"edge": 3, "remote": 0})) == ("gw-1", {"edge": 3})


@pytest.mark.parametrize(
    "data, why",
    [
        (b"{", "not JSON"),
        (b"[]", "not an object"),
        (b'{"s": {}}', "gateway id"),
        (b'{"g": "' + b"x" * 65 + b'", "s": {}}', "gateway id"),
        (b'{"g": "a", "s": []}', "counts missing"),
        (b'{"g": "a", "s": {"Bad Site": 1}}', "bad site name"),
        (b'{"g": "a", "s": {"edge": -1}}', "bad count"),
        (b'{"g": "a", "s": {"edge": true}}', "bad count"),
        (b'{"g": "a", "s": {"edge": 1.5}}', "bad count"),
        (b'{"g": "a", "s": {"edge": 10000001}}', "bad count"),
    ],
)
def test_bad_messages_are_refused(data, why):
    with pytest.raises(PeerMessageRejected, match=why):
        decode_in_flight(data)


def test_table_sums_live_peers_ignores_itself_and_forgets_the_silent():
    t = PeerTable("me", peer_ttl_s=1.0)
    assert not t.update("me", {"edge": 50}, 0.0)
    t.update("a", {"edge": 2, "remote": 1}, 0.0)
    t.update("b", {"edge": 3}, 0.5)
    assert t.totals(0.9) == {"edge": 5, "remote": 1}
    t.update("a", {"remote": 4}, 1.0)  # a's latest message replaces its earlier one
    assert t.totals(1.2) == {"edge": 3, "remote": 4}
    assert t.totals(1.6) == {"remote": 4}  # b silent for > 1 s
    assert t.totals(5.0) == {}
