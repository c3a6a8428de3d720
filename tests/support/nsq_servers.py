"""Start real nsqlookupd/nsqd from .venv/bin on free 127.0.0.1 ports; stop them by PID."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gpt4batch.cli.stack.procs import free_port as stack_free_port

BIN = Path(sys.executable).parent


def free_port() -> int:
    """A free port outside the ephemeral range (cli/stack/procs.py says why)."""
    return stack_free_port()


def free_port_pair() -> tuple[int, int]:
    """Two free ports N, N+1: nsqd's default pairing (TCP 4150, HTTP 4151), which is how a
    client given only --nsqd-tcp-address finds nsqd's HTTP API."""
    for _ in range(100):
        port = free_port()
        if port >= 65535:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port, port + 1
    raise RuntimeError("no free pair of ports")


def nsq_binary(name: str) -> str:
    path = BIN / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make setup` (it builds NSQ v1.3.0)")
    return str(path)


def wait_http(url: str, timeout: float = 15.0, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError as exc:
            last = exc
        time.sleep(0.05)
    raise RuntimeError(f"{url} not ready after {timeout}s: {last}")


def stop_pid(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """SIGTERM by PID, SIGKILL if it does not exit in time."""
    if proc.poll() is not None:
        return
    os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(5)


@dataclass
class Nsqlookupd:
    tcp_port: int
    http_port: int
    proc: subprocess.Popen[bytes]

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"


@dataclass
class Nsqd:
    tcp_port: int
    http_port: int
    data_path: Path
    args: list[str]
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    extra: list[str] = field(default_factory=list)

    @property
    def tcp_address(self) -> str:
        return f"127.0.0.1:{self.tcp_port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT)
        wait_http(f"http://{self.http_address}/ping", proc=self.proc)

    def stop(self) -> None:
        if self.proc is not None:
            stop_pid(self.proc)

    def kill(self) -> None:
        """SIGKILL, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stats(self, topic: str | None = None) -> dict:
        params = {"format": "json"}
        if topic:
            params["topic"] = topic
        return httpx.get(f"http://{self.http_address}/stats", params=params, timeout=5).json()

    def delete_topics(self, prefix: str) -> list[str]:
        """Delete every topic whose name starts with `prefix` (with its channels)."""
        names = [
            t["topic_name"]
            for t in self.stats().get("topics") or []
            if t["topic_name"].startswith(prefix)
        ]
        for name in names:
            httpx.post(
                f"http://{self.http_address}/topic/delete", params={"topic": name}, timeout=5
            )
        return names

    def depth(self, topic: str, channel: str | None = None) -> int:
        """Messages waiting (depth + in-flight + deferred) in a topic or one of its channels."""
        for t in self.stats(topic).get("topics") or []:  # null before any topic exists
            if t["topic_name"] != topic:
                continue
            if channel is None:
                return int(t["depth"])
            for c in t["channels"]:
                if c["channel_name"] == channel:
                    return int(c["depth"]) + int(c["in_flight_count"]) + int(c["deferred_count"])
        return 0


async def wait_channel(nsqd: Nsqd, topic: str, channel: str, timeout: float = 20) -> None:
    """Until nsqd has `channel` on `topic`: nsqd copies messages only to existing channels."""
    deadline = time.monotonic() + timeout
    while not any(
        c["channel_name"] == channel
        for t in nsqd.stats(topic).get("topics") or []
        for c in t.get("channels") or []
    ):
        assert time.monotonic() < deadline, f"channel {channel} of {topic} never appeared"
        await asyncio.sleep(0.05)


@contextmanager
def run_nsqlookupd(
    workdir: Path, tcp: int | None = None, http: int | None = None
) -> Iterator[Nsqlookupd]:
    """nsqlookupd on the given ports (free ones by default) for the block."""
    tcp, http = tcp or free_port(), http or free_port()
    log = (workdir / "nsqlookupd.log").open("ab")
    proc = subprocess.Popen(
        [
            nsq_binary("nsqlookupd"),
            f"--tcp-address=127.0.0.1:{tcp}",
            f"--http-address=127.0.0.1:{http}",
            "--broadcast-address=127.0.0.1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_http(f"http://127.0.0.1:{http}/ping", proc=proc)
        yield Nsqlookupd(tcp, http, proc)
    finally:
        stop_pid(proc)


def free_ports_apart() -> tuple[int, int]:
    """Two free ports N, M with M != N + 1: an nsqd whose HTTP port is not its TCP port + 1."""
    while True:
        tcp, http = free_port(), free_port()
        if http not in (tcp, tcp + 1):
            return tcp, http


@contextmanager
def run_nsqd(
    workdir: Path,
    lookupd: Nsqlookupd | None = None,
    *extra: str,
    name: str = "nsqd",
    ports: tuple[int, int] | None = None,
    lookupd_tcp: str | None = None,
    started: bool = True,
) -> Iterator[Nsqd]:
    """nsqd for the block; `ports` (TCP, HTTP) default to a free pair N, N + 1,
    `lookupd_tcp` names an nsqlookupd by address (one that may start later), and
    `started=False` leaves the start to the block (`nsqd.start()`, e.g. after services)."""
    tcp, http = ports or free_port_pair()
    data = workdir / f"{name}-data"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        nsq_binary("nsqd"),
        f"--tcp-address=127.0.0.1:{tcp}",
        f"--http-address=127.0.0.1:{http}",
        "--broadcast-address=127.0.0.1",
        f"--data-path={data}",
        *extra,
    ]
    lookupd_tcp = lookupd_tcp or (lookupd.tcp_address if lookupd is not None else None)
    if lookupd_tcp:
        args.append(f"--lookupd-tcp-address={lookupd_tcp}")
    nsqd = Nsqd(tcp, http, data, args, workdir / f"{name}.log")
    if started:
        nsqd.start()
    try:
        yield nsqd
    finally:
        nsqd.stop()
