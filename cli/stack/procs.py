"""Child processes of `gpt4batch stack`: start with a log file, wait until ready, stop by PID."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Where picked ports come from when the kernel's range of ephemeral ports is known:
#: below it, so no outgoing connection is given the port between the pick and the
#: listener's bind (with the kernel's own pick, `bind(0)`, that race happened under load:
#: "Address already in use" at a stack's start).
_LOW_PORT = 10_000


def _ephemeral_low() -> int | None:
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return None


#: Every port this process has handed out: a stack plans a dozen ports before any of its
#: processes binds one, so a free port is not yet a reserved one (CI: two picks of one plan
#: drew the same port; the second process died of "Address already in use" while the first
#: answered its readiness check).
_given: set[int] = set()
_given_lock = threading.Lock()


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now and this process has not handed
    out before, outside the ephemeral range where that range is known."""
    with _given_lock:
        port = _pick(_given)
        _given.add(port)
        return port


def _pick(taken: set[int]) -> int:
    low = _ephemeral_low()
    if low is not None and low - 1 > _LOW_PORT:
        for port in random.sample(range(_LOW_PORT, low), 200):
            if port not in taken and _bindable(port):
                return port
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in taken:
            return port
    raise RuntimeError("no free TCP port on 127.0.0.1")


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass
class Proc:
    """One planned (then running) process of the stack."""

    name: str
    component: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    metrics_port: int | None = None
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def start(self, logs: Path, base_env: Mapping[str, str]) -> None:
        log = (logs / f"{self.name}.log").open("ab")
        try:
            self.popen = subprocess.Popen(
                self.argv,
                env={**base_env, **self.env},
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the launcher only; it stops us in order
            )
        finally:
            log.close()

    def wait_ready(self, timeout: float) -> None:
        if self.ready_url and self.popen:
            wait_http(self.ready_url, timeout, self.popen)


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Poll `url` until it answers 200; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with code {proc.returncode}")
        try:
            resp = httpx.get(url, timeout=1.0)
            if resp.status_code == 200:
                return
            last = resp.status_code
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout:.0f}s: {last}")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return not _is_zombie(pid)


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] == "Z"


def pid_runs(pid: int, program: str) -> bool:
    """Whether `pid` is alive and still runs `program` (guards against a reused PID)."""
    if not pid_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return True  # no /proc: trust the PID
    return any(program.encode() in part for part in cmdline)


def stop_pids(pids: Sequence[int], timeout: float) -> None:
    """SIGTERM every PID, wait up to `timeout` for all, then SIGKILL the rest."""
    for pid in pids:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        _reap(pids)
        time.sleep(0.05)
    for pid in pids:
        if pid_alive(pid):
            _signal(pid, signal.SIGKILL)
    _reap(pids)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _reap(pids: Sequence[int]) -> None:
    """Collect exit statuses of our own children so they do not linger as zombies."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
