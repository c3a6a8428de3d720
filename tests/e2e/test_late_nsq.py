"""Services never die of timing (issue 19, item 1): started before nsqd and nsqlookupd,
with nsqd's HTTP port not its TCP port + 1, they wait (saying so once) and the batch
completes; a producer given only nsqd's TCP address still publishes."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    create,
    jsonl,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import free_port, free_ports_apart, run_nsqd, run_nsqlookupd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

RECORDS = 30


class LateNsq:
    """An nsqd (HTTP port not TCP + 1) and an nsqlookupd that start when the test says."""

    def __init__(self, workdir: Path, prefix: str) -> None:
        self.workdir = workdir
        self.nsqd_ports = free_ports_apart()
        self.lookupd_ports = (free_port(), free_port())
        self.flags = [
            "--nsqd-tcp-address", f"127.0.0.1:{self.nsqd_ports[0]}",
            "--lookupd-http-address", f"127.0.0.1:{self.lookupd_ports[1]}",
            "--topic-prefix", prefix, "--touch-interval", "1", "--shutdown-grace", "5",
        ]  # fmt: skip

    @contextmanager
    def running(self) -> Iterator[None]:
        lookupd_tcp = f"127.0.0.1:{self.lookupd_ports[0]}"
        with (
            run_nsqlookupd(self.workdir, *self.lookupd_ports),
            run_nsqd(self.workdir, None, ports=self.nsqd_ports, lookupd_tcp=lookupd_tcp),
        ):
            yield


def write_input(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": f"q{i}"}]}) + "\n")


def said_once_what_they_waited_for(procs: ServiceProcs, *names: str) -> None:
    """Each waited, said so once per thing it waited for, and logged no error meanwhile
    (no traceback per refused connection)."""
    for name in names:
        events = procs.log_events(name)
        waits = [e for e in events if e["event"].startswith("waiting")]
        assert waits, f"{name} never said what it waited for"
        assert len(waits) == len({e["event"] for e in waits}), waits  # not once per retry
        assert not [e for e in events if e["level"] in ("error", "critical")], name


def test_services_started_before_nsqd_and_nsqlookupd_complete_the_batch(tmp_path: Path) -> None:
    nsq = LateNsq(tmp_path, "late")
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, RECORDS)
    with MockUpstream("--seed", "3") as sim, ServiceProcs(tmp_path, nsq.flags) as procs:
        procs.start("sink", "sink", "-o", str(out))
        procs.start("downloader", "downloader", "--download-dir", str(tmp_path / "dl"))
        procs.start("caller", "caller", "--base-url", sim.url, "--access-token", sim.token,
                    "--qps", "0")  # fmt: skip
        # Longer than the old 15-s connect timeout: a service that gives up is dead by now.
        deadline = time.monotonic() + 17
        while time.monotonic() < deadline:
            procs.assert_alive()
            time.sleep(0.5)
        with nsq.running():
            # Right after nsqd starts: nsqlookupd may not list it yet.
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "late")
            wait_for(
                lambda: len(read_jsonl(out)) == RECORDS and (tmp_path / "out.done").exists(),
                timeout=120,
                what="the batch's output",
                check=procs.assert_alive,
            )
            assert [r["id"] for r in read_jsonl(out)] == [f"r{i}" for i in range(RECORDS)]
            assert all(r["iErr"] is None for r in read_jsonl(out))
            said_once_what_they_waited_for(procs, "sink", "downloader", "caller")
            for name in ("caller", "downloader", "sink"):  # before nsqd goes: clean exits
                assert procs.stop(name) == 0


def test_a_batch_api_run_started_before_nsqd_and_nsqlookupd_completes(tmp_path: Path) -> None:
    nsq = LateNsq(tmp_path, "lategw")
    with MockUpstream("--seed", "5") as sim, ServiceProcs(tmp_path, nsq.flags) as procs:
        gateway = Gateway(procs, tmp_path / "gw").start()
        start_caller(procs, sim)
        time.sleep(2)
        with nsq.running():
            client = gateway.client()
            ids = [f"req-{i}" for i in range(10)]
            batch = create(client, upload(client, jsonl([request(i, f"q {i}") for i in ids])))
            done = wait_status(client, batch.id, TERMINAL, procs, 120)
            assert done.status == "completed", done
            assert done.request_counts.completed == len(ids)
            said_once_what_they_waited_for(procs, "gateway", "caller")
            for name in ("caller", "gateway"):  # before nsqd goes: clean exits
                assert procs.stop(name) == 0


def test_ingest_with_only_the_tcp_address_publishes_and_the_http_address_is_a_flag(
    tmp_path: Path,
) -> None:
    source = tmp_path / "in.jsonl"
    write_input(source, 5)
    with run_nsqd(tmp_path, None, ports=free_ports_apart()) as nsqd:
        procs = ServiceProcs(tmp_path, ["--nsqd-tcp-address", nsqd.tcp_address,
                                        "--topic-prefix", "only"])  # fmt: skip

        def run(*args: str) -> subprocess.CompletedProcess[str]:
            cmd = procs.command("ingest", "-i", str(source), *args)
            return subprocess.run(cmd, capture_output=True, text=True, timeout=60, env=procs.env)

        # TCP port + 1 is not nsqd's HTTP port: the asks are published all the same.
        first = run("--batch", "a")
        assert first.returncode == 0, first.stderr[-2000:]
        assert nsqd.depth("only.asks") == 5  # kept in the topic for the first channel
        # With its HTTP address the channels are created first: the caller's holds them.
        second = run("--batch", "b", "--nsqd-http-address", nsqd.http_address)
        assert second.returncode == 0, second.stderr[-2000:]
        assert nsqd.depth("only.asks", "caller") == 10
