"""The process tree from /proc: who is whose child, who is still alive."""

from __future__ import annotations

import os


def _process_table() -> dict[int, tuple[int, str]]:
    """pid → (parent pid, command line) from /proc."""
    out: dict[int, tuple[int, str]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            cmd = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        out[int(d)] = (ppid, cmd)
    return out


def descendants(root: int) -> dict[int, str]:
    table = _process_table()
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, cmd) in table.items():
            if ppid == parent and pid not in found:
                found[pid] = cmd
                frontier.append(pid)
    return found


def alive(pids) -> list[int]:  # type: ignore[no-untyped-def]
    table = _process_table()
    return [p for p in pids if p in table]
