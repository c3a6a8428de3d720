"""What the benchmarks share: input files, CPU and peak-memory readings, one interpreter seam.

Every measurement takes `python`, the interpreter of the tree being measured,
so `bench/table.py --base DIR` can run an older checkout (with its own .venv)
side by side with this one in the same invocation.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.support.batch_files import status_mb  # noqa: E402
from tests.support.pipeline import ServiceProcs  # noqa: E402


def write_records(path: Path, records: int, asks: int = 1) -> Path:
    """`records` lines of the gpt4batch record format, `asks` short asks each."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(records):
            asks_list = [{"id": f"a{k}", "content": f"q{i}.{k}"} for k in range(asks)]
            fh.write(json.dumps({"id": f"r{i}", "asks": asks_list}, separators=(",", ":")))
            fh.write("\n")
    return path


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a live process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory of a live process so far (VmHWM), in MB."""
    return status_mb(pid, "VmHWM")


def timed_run(
    cmd: Sequence[str], *, timeout: float = 600, env: Mapping[str, str] | None = None
) -> Run:
    """Run a command to completion: wall seconds, CPU seconds and peak RSS of that process
    (`env`: its environment, default this process's)."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, text=True, env=env)
        deadline = started + timeout
        while True:  # wait4 gives this child's own CPU time and max RSS
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                proc.kill()
                raise RuntimeError(f"{cmd[:4]} did not finish within {timeout}s")
            time.sleep(0.01)
        elapsed = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        run = Run(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, out.read())
        if proc.returncode != 0:
            raise RuntimeError(f"{cmd[:4]} exited {proc.returncode}:\n{err.read()[-3000:]}")
        return run


@dataclass
class Run:
    seconds: float
    cpu: float
    peak_mb: float
    stdout: str


class Procs(ServiceProcs):
    """ServiceProcs whose services run under the measured tree's interpreter."""

    def __init__(self, python: str, workdir: Path, common_flags: list[str]):
        super().__init__(workdir, common_flags)
        self.python = python

    def command(self, service: str, *args: str) -> list[str]:
        cmd = super().command(service, *args)
        cmd[0] = self.python
        return cmd
