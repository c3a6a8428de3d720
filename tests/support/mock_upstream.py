"""Run `gpt4batch mock-upstream` as a subprocess for a test.

    with MockUpstream("--qps", "5") as mock:
        client = httpx.Client(base_url=mock.url, headers=mock.headers)
        ...
        assert mock.stats()["chain_errors"] == 0

The simulator listens on a free port (`--port 0`); its first stdout line
`listening http://HOST:PORT` gives the URL. It is stopped by PID: SIGTERM,
then SIGKILL after `stop_timeout` seconds.
"""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
from types import TracebackType
from typing import Any

import httpx

DEFAULT_TOKEN = "sk-mock"


class MockUpstream:
    """Context manager owning one simulator process."""

    def __init__(
        self,
        *args: str,
        token: str = DEFAULT_TOKEN,
        python: str | None = None,
        start_timeout: float = 15.0,
        stop_timeout: float = 5.0,
        stderr: int | None = subprocess.DEVNULL,
    ) -> None:
        self.args = list(args)
        self.token = token
        self.python = python or sys.executable
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.stderr = stderr
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    @property
    def download_allowance(self) -> list[str]:
        """The downloader's flag allowing the simulator's own host:port (nothing else local)."""
        return ["--allow-download-host", self.url.split("://", 1)[1]]

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def start(self) -> MockUpstream:
        cmd = [self.python, "-m", "gpt4batch.services.mock_upstream", "--port", "0"]
        cmd += ["--token", self.token, *self.args]
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=os.environ.copy()
        )
        try:
            self.url = self._read_url()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _read_url(self) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            if not sel.select(self.start_timeout):
                raise RuntimeError("mock-upstream printed no URL in time")
        line = self.proc.stdout.readline().strip()
        if not line.startswith("listening "):
            raise RuntimeError(f"mock-upstream did not start: {line!r}")
        return line.split(" ", 1)[1]

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                if httpx.get(f"{self.url}/stats", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("mock-upstream never answered /stats")
            time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        """What the simulator saw (`GET /stats`)."""
        return httpx.get(f"{self.url}/stats", timeout=5.0).json()

    def reset(self) -> None:
        httpx.post(f"{self.url}/stats/reset", timeout=5.0).raise_for_status()

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(self.stop_timeout)
        if proc.stdout is not None:
            proc.stdout.close()

    def __enter__(self) -> MockUpstream:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
