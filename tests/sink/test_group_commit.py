"""Group commit: a group of results is one journal write and one fsync, still one line
per record; a crash between the write and the FINs loses nothing and writes nothing twice."""

from __future__ import annotations

import json
import os
from pathlib import Path

from gpt4batch.common.messages import ResultMessage
from gpt4batch.services.sink.ledger import parse_entry, read_ledger
from tests.sink.helpers import DELIVERY, ids, journal, make_sink, manifest, result, run


def entries(out: Path) -> list[tuple[int, bool]]:
    lines = journal(out).read_bytes().splitlines(keepends=True)
    return [(e.seq, e.ok) for e in map(parse_entry, lines) if e is not None]


def group(*msgs: ResultMessage) -> list[tuple[ResultMessage, object]]:
    return [(m, DELIVERY) for m in msgs]


def test_a_group_is_one_fsync_and_one_line_per_record(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fsyncs: list[int] = []

    def counting_fsync(fd: int) -> None:
        fsyncs.append(fd)
        os.fsync(fd)

    async def scenario() -> None:
        sink, _ = make_sink(out, fsync=counting_fsync)
        await sink.start()
        await sink.ledger("b1")
        before = len(fsyncs)
        outcomes = await sink.handle_results(group(*(result(f"r{i}", seq=i) for i in range(100))))
        assert outcomes == [None] * 100  # → every message FINished
        assert len(fsyncs) - before == 1
        await sink.handle_manifest(manifest(100), DELIVERY)
        await sink.close()

    run(scenario())
    assert sorted(entries(out)) == [(i, True) for i in range(100)]
    assert ids(out) == [f"r{i}" for i in range(100)]


def test_repeats_in_a_group_make_one_line_and_a_success_wins(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        msgs = [
            result("r0", seq=0),
            result("r1", seq=1, failed=True),
            result("r0", seq=0),
            result("r1", seq=1),
            result("r1", seq=1, failed=True),
            result("r2", seq=2, reject_line=3),
            result("r2", seq=2, reject_line=3),
        ]
        outcomes = await sink.handle_results(group(*msgs))
        assert outcomes == [None] * len(msgs)  # repeats are finished, not requeued
        ledger = await sink.ledger("b1")
        assert (ledger.counts.done, ledger.counts.failed, ledger.counts.duplicates) == (3, 1, 4)
        await sink.close()

    run(scenario())
    assert sorted(entries(out)) == [(0, True), (1, True), (2, False)]
    rejects = out.with_name("out.rejects.jsonl").read_text().splitlines()
    assert [json.loads(x)["line"] for x in rejects] == [3]


def test_a_redelivery_after_a_crash_before_fin_is_recognised(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    msgs = [result(f"r{i}", seq=i) for i in range(10)]

    async def written_but_not_finished() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_results(group(*msgs))
        # the process dies here: nothing was FINished, nsqd redelivers every message

    async def restarted() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        outcomes = await sink.handle_results(group(*msgs[5:], result("r10", seq=10)))
        assert outcomes == [None] * 6
        outcomes = await sink.handle_results(group(*msgs[:5]))
        assert outcomes == [None] * 5
        ledger = await sink.ledger("b1")
        assert (ledger.counts.done, ledger.counts.duplicates) == (11, 10)
        await sink.handle_manifest(manifest(11), DELIVERY)
        await sink.close()

    run(written_but_not_finished())
    run(restarted())
    assert sorted(entries(out)) == [(i, True) for i in range(11)]
    assert ids(out) == [f"r{i}" for i in range(11)]
    assert read_ledger(out).status == "complete"


def test_a_failed_group_write_requeues_all_and_counts_none(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fail = {"on": False}

    def flaky_fsync(fd: int) -> None:
        if fail["on"]:
            raise OSError(5, "I/O error")
        os.fsync(fd)

    async def scenario() -> None:
        sink, _ = make_sink(out, fsync=flaky_fsync)
        await sink.start()
        await sink.ledger("b1")
        msgs = [result(f"r{i}", seq=i) for i in range(5)]
        fail["on"] = True
        outcomes = await sink.handle_results(group(*msgs))
        assert all(isinstance(o, OSError) for o in outcomes)  # → REQ, redelivered later
        assert entries(out) == []  # no line left behind (cut back after the failed fsync)
        assert (await sink.ledger("b1")).counts.done == 0
        fail["on"] = False
        assert await sink.handle_results(group(*msgs)) == [None] * 5
        await sink.close()

    run(scenario())
    assert sorted(entries(out)) == [(i, True) for i in range(5)]
