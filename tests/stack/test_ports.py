"""Port picking for local stacks and tests: listen ports come from below the kernel's ephemeral range, so
an outgoing connection cannot take one between the probe and the child's bind (a CI flake: Envoy's
"cannot bind ... Address already in use"), and one process never hands out the same port twice."""

from __future__ import annotations

import socket

from extproc.tools.stack.procs import ephemeral_port_range, free_port, listen_port_candidates, port_is_free


def test_candidates_lie_below_the_ephemeral_range() -> None:
    assert listen_port_candidates((32768, 60999)) == range(20000, 32768)
    assert listen_port_candidates((49152, 65535), floor=30000) == range(30000, 49152)


def test_no_candidates_when_the_ephemeral_range_starts_low() -> None:
    # An operator who widened the ephemeral range down to 1024 leaves nothing safe: the caller falls back.
    assert len(listen_port_candidates((1024, 65535))) == 0


def test_free_ports_are_distinct_outside_the_ephemeral_range_and_bindable() -> None:
    low, _ = ephemeral_port_range()
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    if len(listen_port_candidates((low, 0))):
        assert all(20000 <= p < low for p in ports)
    assert all(port_is_free(p) for p in ports[:20])


def test_a_listening_port_is_never_handed_out() -> None:
    low, _ = ephemeral_port_range()
    held: list[socket.socket] = []
    try:
        # Hold many candidate ports; none of them may come back from free_port.
        for port in range(20000, min(low, 20000 + 2000)):
            s = socket.socket()
            try:
                s.bind(("127.0.0.1", port))
                s.listen()
            except OSError:
                s.close()
                continue
            held.append(s)
        taken = {s.getsockname()[1] for s in held}
        for _ in range(50):
            assert free_port() not in taken
    finally:
        for s in held:
            s.close()
