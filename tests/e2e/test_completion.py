"""Completion means records and files, over real nsqd: channels exist before anything is
published, `run -n` waits for every planned download and leaves no channel behind, and a
`--fix` result replaces a failed line in `sink -o FILE`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx

from gpt4batch.cli.run.command import run_channel
from gpt4batch.common.messages import Record, ResultMessage
from gpt4batch.common.topics import Topics
from gpt4batch.services.sink.ledger import read_ledger
from tests.e2e.test_pipeline import caller_flags, write_jsonl
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import BIN, Nsqd, Nsqlookupd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for


def channels(nsqd: Nsqd, topic: str) -> list[str]:
    return [
        c["channel_name"]
        for t in nsqd.stats(topic).get("topics") or []
        if t["topic_name"] == topic
        for c in t.get("channels") or []
    ]


def draws(n: int, prefix: str = "d") -> list[dict]:
    return [{"id": f"{prefix}{i}", "asks": [{"id": "a", "content": f"draw {i}"}]} for i in range(n)]


def test_a_foreign_channel_first_does_not_take_results_from_the_sink(
    tmp_path: Path, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> None:
    """`nsq_tail` on the results topic before anything else; the sink starts last, after
    every result is published: it still gets all of them (the caller created its channel)."""
    topics = Topics(topic_prefix)
    log = (tmp_path / "tail.log").open("wb")
    tail = subprocess.Popen(
        [str(BIN / "nsq_tail"), f"--nsqd-tcp-address={nsqd.tcp_address}",
         f"--topic={topics.results}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        wait_for(lambda: channels(nsqd, topics.results) != [], 20, "nsq_tail's channel")
        assert "sink" not in channels(nsqd, topics.results)  # only nsq_tail's so far
        flags = [
            "--lookupd-http-address", nsqlookupd.http_address,
            "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
        ]  # fmt: skip
        out = tmp_path / "late.jsonl"
        with MockUpstream("--seed", "4") as sim, ServiceProcs(tmp_path, flags) as procs:
            procs.start("caller", "caller", *caller_flags(sim))
            source = write_jsonl(tmp_path / "in.jsonl", draws(40, "x"))
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "late")
            wait_for(lambda: sim.stats()["total_calls"] >= 40, 60, "every call")
            procs.start(
                "downloader",
                "downloader",
                "--download-dir",
                str(tmp_path / "dl"),
                *sim.download_allowance,
            )
            procs.start("sink", "sink", "-o", str(out))
            wait_for(out.with_name("late.done").exists, 60, ".done", procs.assert_alive)
    finally:
        os.kill(tail.pid, 15)
        tail.wait(10)
    assert [r["id"] for r in read_jsonl(out)] == [f"x{i}" for i in range(40)]
    state = read_ledger(out)
    assert state.counts.downloads_planned >= 40 and state.counts.downloads_failed == 0


def test_run_n_waits_for_every_planned_file_and_deletes_its_channel(
    tmp_path: Path, nsqd: Nsqd, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    write_jsonl(tmp_path / "in.jsonl", draws(30))
    batch = "pictures"
    # A foreign result already waits on the run's own channel (another run's copy).
    channel = run_channel(batch)
    http = f"http://{nsqd.http_address}"
    httpx.post(f"{http}/channel/create", params={"topic": topics.results, "channel": channel})
    foreign = ResultMessage(batch="other", seq=0, record=Record(id="z", asks=[]))
    httpx.post(f"{http}/pub", params={"topic": topics.results}, content=foreign.model_dump_json())
    with MockUpstream("--seed", "6", "--latency-ms", "5") as sim:
        result = subprocess.run(
            [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "-o", "out.jsonl",
             "-n", "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
             "--batch", batch, "--base-url", sim.url, "--access-token", sim.token, "-q", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"d{i}" for i in range(30)]
    planned = [s for r in records for a in r["answers"] for s in a.get("spec_downloads") or []]
    assert len(planned) >= 30
    rows = {row["local"]: row for row in read_jsonl(tmp_path / "out.downloads.jsonl")}
    for spec in planned:  # every file is on disk and has its row the moment run returns
        assert rows[spec["local"]]["ok"] is True
        assert (tmp_path / spec["local"]).stat().st_size == rows[spec["local"]]["size"]
    for topic in (topics.results, topics.downloaded, topics.batches, topics.dead):
        assert channel not in channels(nsqd, topic)
    # Deleted after the run's readers left: nsqd cut no live connection (pynsq's ERROR).
    assert "IntegrityError" not in result.stderr


def test_fix_into_the_same_batch_replaces_failed_lines(
    tmp_path: Path, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> None:
    flags = [
        "--lookupd-http-address", nsqlookupd.http_address,
        "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
    ]  # fmt: skip
    out = tmp_path / "fix.jsonl"
    records = [{"id": f"f{i}", "asks": [{"id": "a", "content": f"q{i}"}]} for i in range(60)]
    source = write_jsonl(tmp_path / "in.jsonl", records)
    with ServiceProcs(tmp_path, flags) as procs:
        procs.start("sink", "sink", "-o", str(out))
        with MockUpstream("--seed", "9", "--fault-5xx", "0.3") as flaky:
            procs.start("caller", "caller", *caller_flags(flaky, "--retries", "0"))
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "fx")
            wait_for(out.with_name("fix.done").exists, 60, "first pass", procs.assert_alive)
            procs.stop("caller")
        failed = [r["id"] for r in read_jsonl(out) if r["iErr"]]
        assert failed, "the simulator's faults left no failed record"
        with MockUpstream("--seed", "9") as healthy:
            procs.start("caller2", "caller", *caller_flags(healthy))
            copy = tmp_path / "first-pass.jsonl"
            copy.write_bytes(out.read_bytes())
            procs.run_once("ingest2", "ingest", "-i", str(copy), "--fix", "--batch", "fx")
            wait_for(
                lambda: read_ledger(out).counts.failed == 0 and out.with_name("fix.done").exists(),
                60, "the fixed lines", procs.assert_alive,
            )  # fmt: skip
            assert healthy.stats()["total_calls"] == len(failed)  # only the failed ones
    lines = read_jsonl(out)
    assert [r["id"] for r in lines] == [f"f{i}" for i in range(60)]
    assert all(r["iErr"] is None for r in lines)
    assert json.loads(out.with_name("fix.done").read_text())["failed"] == 0
