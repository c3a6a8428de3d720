"""The three walks of docs/architecture.md, measured on a checkout (issue 20's closing note).

    <tree>/.venv/bin/python tools/arch_walk/walk.py --tree <tree> --work DIR [--walk NAME]

(NAME: run, foreign or batch, repeatable; all three by default.) Then
`python tools/arch_walk/report.py DIR/<walk>` counts each walk.

Starts nsqlookupd, nsqd (the tree's .venv/bin) and the simulator (`gpt4batch mock-upstream`,
untraced), then for each walk runs the project's processes under tools/arch_walk/tracer.py
and sends ONE record whose ask text carries a marker:

- run:     `gpt4batch run -n` (one process) on a one-line input, until it exits;
- foreign: `gpt4batch caller` and `gpt4batch sink`; an AskMessage published straight to
           `<prefix>.asks` over nsqd's HTTP /pub (no manifest), until the sink's arrival-order
           file holds the record;
- batch:   `gpt4batch caller` (openai kind) and `gpt4batch gateway`; the official `openai`
           SDK uploads a one-request file, creates the batch, polls it to `completed` and
           reads the output file.

The traces are written to DIR/<walk>/*.trace.json; report.py counts them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
SECRET = "arch-walk-bus-secret-0123456789abcdef"
TOKEN = "sk-mock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except (httpx.HTTPError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.1)


class Procs:
    """Processes started here, stopped by PID (SIGTERM, then SIGKILL)."""

    def __init__(self, tree: Path, work: Path) -> None:
        self.tree, self.work = tree, work
        self.python = str(tree / ".venv/bin/python")
        self.env = {**os.environ, "GPT4BATCH_BUS_SECRET": SECRET, "PYTHONUNBUFFERED": "1"}
        self.env["XDG_STATE_HOME"] = str(work / "xdg-state")
        self.running: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, cmd: list[str], cwd: Path | None = None) -> subprocess.Popen[bytes]:
        log = (self.work / f"{name}.log").open("ab")
        proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, cwd=cwd or self.work
        )
        self.running.append(proc)
        return proc

    def traced(self, name: str, marker: str, module: str, *args: str) -> list[str]:
        out = self.work / f"{name}.trace.json"
        return [self.python, str(HERE / "tracer.py"), str(out), marker, "-m", module, *args]

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """SIGTERM (a service writes its trace at exit), SIGKILL after `timeout`."""
        for sig, wait_s in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            if proc.poll() is not None:
                break
            os.kill(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(wait_s)
        if proc in self.running:
            self.running.remove(proc)
        return int(proc.returncode)

    def stop_all(self) -> None:
        for proc in reversed(list(self.running)):
            self.stop(proc)


def start_nsq(procs: Procs) -> tuple[str, str, str]:
    """nsqlookupd and nsqd; (nsqd tcp, nsqd http, lookupd http)."""
    bin_ = procs.tree / ".venv/bin"
    lt, lh = free_port(), free_port()
    procs.start(
        "nsqlookupd",
        [str(bin_ / "nsqlookupd"), f"--tcp-address=127.0.0.1:{lt}",
         f"--http-address=127.0.0.1:{lh}", "--broadcast-address=127.0.0.1"],
    )  # fmt: skip
    wait(lambda: httpx.get(f"http://127.0.0.1:{lh}/ping").status_code == 200, 15, "nsqlookupd")
    while True:  # nsqd's TCP port N and HTTP port N + 1, as the services expect by default
        t = free_port()
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", t + 1))
            break
        except OSError:
            continue
    data = procs.work / "nsqd-data"
    data.mkdir(exist_ok=True)
    procs.start(
        "nsqd",
        [str(bin_ / "nsqd"), f"--tcp-address=127.0.0.1:{t}", f"--http-address=127.0.0.1:{t + 1}",
         "--broadcast-address=127.0.0.1", f"--data-path={data}",
         f"--lookupd-tcp-address=127.0.0.1:{lt}"],
    )  # fmt: skip
    wait(lambda: httpx.get(f"http://127.0.0.1:{t + 1}/ping").status_code == 200, 15, "nsqd")
    return f"127.0.0.1:{t}", f"127.0.0.1:{t + 1}", f"127.0.0.1:{lh}"


def start_simulator(procs: Procs) -> str:
    cmd = [procs.python, "-m", "gpt4batch.services.mock_upstream", "--port", "0"]
    proc = subprocess.Popen(
        [*cmd, "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=procs.env
    )
    procs.running.append(proc)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode().strip()
    assert line.startswith("listening "), line
    url = line.split(" ", 1)[1]
    wait(lambda: httpx.get(f"{url}/stats").status_code == 200, 15, "the simulator")
    return url


def metrics_ready(port: int) -> bool:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=1).status_code == 200


def walk_run(procs: Procs, nsq: tuple[str, str, str], sim: str, marker: str) -> None:
    record = {"id": "walk-1", "asks": [{"id": "a1", "content": f"say hello {marker}"}]}
    (procs.work / "in.jsonl").write_text(json.dumps(record) + "\n")
    args = [
        "run", "-i", "in.jsonl", "-o", "out.jsonl", "-n", "--nsqd-tcp-address", nsq[0],
        "--lookupd-http-address", nsq[2], "--topic-prefix", f"w{uuid.uuid4().hex[:10]}",
        "--base-url", sim, "--access-token", TOKEN, "-q", "0",
    ]  # fmt: skip
    proc = procs.start("run", procs.traced("run", marker, "gpt4batch.cli", *args))
    rc = proc.wait(180)
    procs.running.remove(proc)
    out = (procs.work / "out.jsonl").read_text()
    assert rc == 0 and marker in out, f"run exited {rc}; see {procs.work}/run.log"


def service_flags(nsq: tuple[str, str, str], prefix: str, port: int) -> list[str]:
    return [
        "--nsqd-tcp-address", nsq[0], "--lookupd-http-address", nsq[2], "--topic-prefix", prefix,
        "--metrics-port", str(port), "--metrics-host", "127.0.0.1", "--log-format", "json",
    ]  # fmt: skip


def walk_foreign(procs: Procs, nsq: tuple[str, str, str], sim: str, marker: str) -> None:
    prefix = f"w{uuid.uuid4().hex[:10]}"
    out = procs.work / "sink" / "out.jsonl"
    out.parent.mkdir()
    cp, sp = free_port(), free_port()
    caller = procs.start(
        "caller",
        procs.traced("caller", marker, "gpt4batch.services.caller",
                     *service_flags(nsq, prefix, cp), "--base-url", sim, "--access-token", TOKEN,
                     "--qps", "0"),
    )  # fmt: skip
    sink = procs.start(
        "sink",
        procs.traced("sink", marker, "gpt4batch.services.sink",
                     *service_flags(nsq, prefix, sp), "-o", str(out)),
    )  # fmt: skip
    wait(lambda: metrics_ready(cp) and metrics_ready(sp), 60, "caller and sink")
    time.sleep(3)  # past the caller's first 1.5 s without calls, and idle
    record = {"id": "walk-1", "asks": [{"id": "a1", "content": f"say hello {marker}"}]}
    ask = {"v": 1, "batch": "foreign", "seq": 0, "record": record}
    httpx.post(
        f"http://{nsq[1]}/pub", params={"topic": f"{prefix}.asks"}, content=json.dumps(ask)
    ).raise_for_status()

    def arrived() -> bool:
        return any(marker in p.read_text() for p in out.parent.glob("*.jsonl") if p.is_file())

    wait(arrived, 60, "the record in the sink's arrival-order file")
    time.sleep(1)
    for proc in (sink, caller):
        procs.stop(proc)


def walk_batch(procs: Procs, nsq: tuple[str, str, str], sim: str, marker: str) -> None:
    from openai import OpenAI

    prefix = f"w{uuid.uuid4().hex[:10]}"
    cp, gp, api = free_port(), free_port(), free_port()
    key = "sk-arch-walk"
    caller = procs.start(
        "caller",
        procs.traced("caller", marker, "gpt4batch.services.caller",
                     *service_flags(nsq, prefix, cp), "--upstream", "openai", "--base-url", sim,
                     "--access-token", TOKEN, "--qps", "0"),
    )  # fmt: skip
    gateway = procs.start(
        "gateway",
        procs.traced("gateway", marker, "gpt4batch.services.gateway",
                     *service_flags(nsq, prefix, gp), "--port", str(api), "--host", "127.0.0.1",
                     "--data-dir", str(procs.work / "gateway-data"), "--api-key", key),
    )  # fmt: skip
    wait(lambda: metrics_ready(cp), 60, "the caller")
    wait(lambda: httpx.get(f"http://127.0.0.1:{api}/v1/batches").status_code, 60, "the gateway")
    time.sleep(3)
    client = OpenAI(base_url=f"http://127.0.0.1:{api}/v1", api_key=key, max_retries=0)
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {marker}"}]}
    line = {"custom_id": "walk-1", "method": "POST", "url": "/v1/chat/completions", "body": body}
    file_id = client.files.create(
        file=("input.jsonl", (json.dumps(line) + "\n").encode()), purpose="batch"
    ).id
    batch = client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    found: list[Any] = []

    def done() -> bool:
        found[:] = [client.batches.retrieve(batch.id)]
        return str(found[0].status) in ("completed", "failed", "cancelled", "expired")

    wait(done, 120, "the batch to complete")
    assert found[0].status == "completed" and found[0].output_file_id, found[0]
    text = client.files.content(found[0].output_file_id).text
    assert marker in text, text
    time.sleep(1)
    for proc in (gateway, caller):
        procs.stop(proc)


WALKS = {"run": walk_run, "foreign": walk_foreign, "batch": walk_batch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", type=Path, required=True, help="checkout with its .venv")
    parser.add_argument("--work", type=Path, required=True, help="folder for traces and logs")
    parser.add_argument("--walk", choices=sorted(WALKS), action="append")
    opts = parser.parse_args()
    for name in opts.walk or list(WALKS):
        work = opts.work.resolve() / name
        work.mkdir(parents=True, exist_ok=False)
        procs = Procs(opts.tree.resolve(), work)
        marker = f"WALKMARK{uuid.uuid4().hex[:12]}"
        try:
            nsq = start_nsq(procs)
            sim = start_simulator(procs)
            WALKS[name](procs, nsq, sim, marker)
        finally:
            procs.stop_all()
        (work / "marker.txt").write_text(marker)
        print(f"{name}: traces in {work}", file=sys.stderr)


if __name__ == "__main__":
    main()
