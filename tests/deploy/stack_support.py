"""Run `gpt4batch stack up` as a subprocess for a test; stop it with `stack down`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from gpt4batch.cli.stack.procs import pid_alive

STACK = [sys.executable, "-m", "gpt4batch.cli", "stack"]


def wait_for(what: str, check: Callable[[], Any], timeout: float, log_dir: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    logs = "\n".join(
        f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted(log_dir.glob("*.log"))
    )
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


@contextmanager
def running_stack(workdir: Path, *args: str, env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Yield stack.json once the stack is up; afterwards assert every PID is gone."""
    out = (workdir / "launcher.out").open("wb")
    launcher = subprocess.Popen(
        [*STACK, "up", "--workdir", str(workdir), *args],
        env={**os.environ, **env},
        stdout=out,
        stderr=subprocess.STDOUT,
    )
    state_path = workdir / "stack.json"
    state: dict[str, Any] = {}
    try:
        wait_for(
            "stack.json",
            lambda: state_path.exists() or launcher.poll() is not None,
            60,
            workdir / "logs",
        )
        assert launcher.poll() is None, (workdir / "launcher.out").read_text()
        state = json.loads(state_path.read_text())
        yield state
    finally:
        down = subprocess.run(
            [*STACK, "down", "--workdir", str(workdir)], capture_output=True, timeout=120
        )
        launcher.wait(60)
        out.close()
    assert down.returncode == 0, down.stderr
    assert launcher.returncode == 0, (workdir / "launcher.out").read_text()
    pids = [p["pid"] for p in state["processes"]] + [state["launcher_pid"]]
    assert [pid for pid in pids if pid_alive(pid)] == []
