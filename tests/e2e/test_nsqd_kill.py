"""nsqd can die: `kill -9` of nsqd mid-batch, restart, `gpt4batch reconcile` → every id once,
every planned file present and matching its row, `.done` only then."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gpt4batch.services.ingest.reader import file_sha256
from gpt4batch.services.sink.ledger import read_ledger
from tests.e2e.test_pipeline import caller_flags, write_jsonl
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

RECORDS = 150


def check_batch(out: Path, downloads: Path, prefix: str, n: int) -> int:
    """Every id once in input order, every planned file on disk matching its row."""
    records = read_jsonl(out)
    assert [r["id"] for r in records] == [f"{prefix}{i}" for i in range(n)]
    rows = {r["local"]: r for r in read_jsonl(out.with_name(out.stem + ".downloads.jsonl"))}
    planned = [s["local"] for r in records for a in r.get("answers") or []
               for s in a.get("spec_downloads") or []]  # fmt: skip
    for local in planned:
        row = rows[local]
        if row["ok"]:
            path = downloads / local
            assert path.stat().st_size == row["size"] and file_sha256(path) == row["sha256"]
    assert not [p for p in downloads.iterdir() if p.name.startswith(".")]  # no partial files
    return len(planned)


@pytest.mark.parametrize("at", [0.1, 0.6])
def test_kill_9_of_nsqd_then_reconcile(tmp_path: Path, topic_prefix: str, at: float) -> None:
    with run_nsqd(tmp_path, None, "--mem-queue-size=0", "--msg-timeout=5s") as nsqd:
        flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
                 "--touch-interval", "1", "--shutdown-grace", "3"]  # fmt: skip
        out, downloads = tmp_path / "k.jsonl", tmp_path / "dl"
        records = [{"id": f"n{i}", "asks": [{"id": "a", "content": f"draw {i}"}]}
                   for i in range(RECORDS)]  # fmt: skip
        source = write_jsonl(tmp_path / "in.jsonl", records)
        with (
            MockUpstream("--seed", "8", "--latency-ms", "20") as sim,
            ServiceProcs(tmp_path, flags) as procs,
        ):
            procs.start("sink", "sink", "-o", str(out))
            procs.start(
                "downloader",
                "downloader",
                "--download-dir",
                str(downloads),
                *sim.download_allowance,
            )
            procs.start("caller", "caller", *caller_flags(sim, "--concurrency", "8"))
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "nk")
            wait_for(
                lambda: read_ledger(out).counts.done >= RECORDS * at,
                60,
                "progress",
                procs.assert_alive,
            )
            nsqd.kill()
            assert not out.with_name("k.done").exists()
            nsqd.start()  # same ports, same data folder
            reconcile = subprocess.run(
                [sys.executable, "-m", "gpt4batch.cli", "reconcile", *flags, "-o", str(out),
                 "--download-dir", str(downloads), "--wait", "90"],
                capture_output=True, text=True, timeout=150,
            )  # fmt: skip
            assert reconcile.returncode == 0, reconcile.stderr[-2000:]
            try:
                wait_for(out.with_name("k.done").exists, 90, ".done", procs.assert_alive)
            except AssertionError:
                state = read_ledger(out)
                raise AssertionError(
                    f"{reconcile.stdout} ledger={state.counts} missing={list(state.missing_seqs())}"
                    f" pending={state.pending_downloads()} nsqd={nsqd.stats()['topics']}"
                ) from None
            calls = sim.stats()["calls"]
        done = json.loads(out.with_name("k.done").read_text())
        assert (done["total"], done["written"], done["failed"]) == (RECORDS, RECORDS, 0)
        planned = check_batch(out, downloads, "n", RECORDS)
        assert planned >= RECORDS and done["downloads"] == planned
        print(f"kill at {at:.0%}: {reconcile.stdout.strip()}; upstream calls {calls}")
