"""Run gpt4batch services as separate processes for end-to-end tests.

    with ServiceProcs(workdir, nsq_flags) as procs:
        procs.start("sink", "-o", str(out))
        procs.run_once("ingest", "-i", str(input))   # waits for exit 0
        ...
    # on exit every process gets SIGTERM (by PID) and must exit 0

Each process logs to `<workdir>/logs/<name>.log`, JSON lines.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from gpt4batch.common.authenticator import SECRET_ENV
from tests.support.nsq_servers import free_port, wait_http
from tests.support.signing import bus_secret


class ServiceProcs:
    def __init__(self, workdir: Path, common_flags: list[str], env: dict[str, str] | None = None):
        self.workdir = workdir
        self.logs = workdir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.common_flags = common_flags
        self.env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            SECRET_ENV: bus_secret(),  # the services sign and verify with one shared secret
            **(env or {}),
        }
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_ports: dict[str, int] = {}

    def command(self, service: str, *args: str) -> list[str]:
        cmd = [sys.executable, "-m", f"gpt4batch.services.{service}", *self.common_flags]
        return [*cmd, "--log-format", "json", *args]

    def start(self, name: str, service: str, *args: str) -> subprocess.Popen[bytes]:
        port = free_port()
        self.metrics_ports[name] = port
        cmd = self.command(service, "--metrics-port", str(port), "--metrics-host", "127.0.0.1")
        cmd += args
        log = (self.logs / f"{name}.log").open("ab")
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env)
        self.procs[name] = proc
        # Ready once /metrics answers: signal handlers are in place by then.
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=30, proc=proc)
        return proc

    def run_once(self, name: str, service: str, *args: str, timeout: float = 120) -> str:
        cmd = self.command(service, *args)
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=self.env)
        (self.logs / f"{name}.log").write_text(result.stdout + result.stderr)
        if result.returncode != 0:
            raise AssertionError(f"{name} exited {result.returncode}:\n{result.stderr[-3000:]}")
        return result.stdout + result.stderr

    def kill(self, name: str) -> None:
        """SIGKILL, as in a crash."""
        proc = self.procs.pop(name)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def stop(self, name: str, timeout: float = 40) -> int:
        proc = self.procs.pop(name)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)
                return -9
        return proc.returncode

    def log_events(self, name: str) -> list[dict[str, Any]]:
        events = []
        for line in (self.logs / f"{name}.log").read_text(errors="replace").splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
        return events

    def assert_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.logs / f"{name}.log").read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} died with {proc.returncode}:\n{tail}")

    def __enter__(self) -> ServiceProcs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        codes = {name: self.stop(name) for name in list(self.procs)}
        if exc_type is None:
            bad = {n: c for n, c in codes.items() if c != 0}
            assert not bad, f"services did not exit cleanly on SIGTERM: {bad}"


def nsq_flags(nsqd: Any, nsqlookupd: Any, topic_prefix: str) -> list[str]:
    """The flags that put a service process on the test's nsqd, nsqlookupd and topics."""
    return [
        "--nsqd-tcp-address", nsqd.tcp_address,
        "--lookupd-http-address", nsqlookupd.http_address,
        "--topic-prefix", topic_prefix,
        "--touch-interval", "1",
        "--shutdown-grace", "5",
    ]  # fmt: skip


def wait_for(
    predicate: Callable[[], bool],
    timeout: float,
    what: str,
    check: Callable[[], None] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if check is not None:
            check()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def count_lines(path: Path) -> int:
    if not path.exists():
        return 0
    with path.open("rb") as fh:
        return sum(1 for _ in fh)
