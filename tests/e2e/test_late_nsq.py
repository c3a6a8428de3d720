"""Services never die of timing (issue 19, item 1): started before nsqd and nsqlookupd,
with nsqd's HTTP port not its TCP port + 1, they wait (saying so once) and the batch
completes; a producer given only nsqd's TCP address still publishes."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import free_port, free_ports_apart, run_nsqd, run_nsqlookupd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

RECORDS = 30


def write_input(path: Path, n: int) -> None:
    with path.open("w") as fh:
        for i in range(n):
            fh.write(json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": f"q{i}"}]}) + "\n")


def test_services_started_before_nsqd_and_nsqlookupd_complete_the_batch(tmp_path: Path) -> None:
    nsqd_tcp, nsqd_http = free_ports_apart()
    lookupd_tcp, lookupd_http = free_port(), free_port()
    flags = [
        "--nsqd-tcp-address", f"127.0.0.1:{nsqd_tcp}",
        "--lookupd-http-address", f"127.0.0.1:{lookupd_http}",
        "--topic-prefix", "late", "--touch-interval", "1", "--shutdown-grace", "5",
    ]  # fmt: skip
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_input(source, RECORDS)
    with MockUpstream("--seed", "3") as sim, ServiceProcs(tmp_path, flags) as procs:
        procs.start("sink", "sink", "-o", str(out))
        procs.start("downloader", "downloader", "--download-dir", str(tmp_path / "dl"))
        procs.start("caller", "caller", "--base-url", sim.url, "--access-token", sim.token,
                    "--qps", "0")  # fmt: skip
        # Longer than the old 15-s connect timeout: a service that gives up is dead by now.
        deadline = time.monotonic() + 17
        while time.monotonic() < deadline:
            procs.assert_alive()
            time.sleep(0.5)
        with (
            run_nsqlookupd(tmp_path, lookupd_tcp, lookupd_http),
            run_nsqd(
                tmp_path, None, ports=(nsqd_tcp, nsqd_http), lookupd_tcp=f"127.0.0.1:{lookupd_tcp}"
            ),
        ):
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
            for name in ("sink", "downloader", "caller"):
                waits = [e for e in procs.log_events(name) if e["event"].startswith("waiting")]
                assert waits, f"{name} never said what it waited for"
                # Once per thing waited for, not once per retry.
                assert len(waits) == len({e["event"] for e in waits}), waits
            procs.stop("caller")  # before nsqd goes: a clean exit
            procs.stop("downloader")
            procs.stop("sink")


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
