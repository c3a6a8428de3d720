"""A result is FINished (its handler returns) only after its ledger line is written and fsynced."""

from __future__ import annotations

import asyncio
import os
import threading
from pathlib import Path

import pytest

from gpt4batch.services.sink.appender import SyncedAppender
from gpt4batch.services.sink.ledger import parse_entry
from tests.sink.helpers import DELIVERY, journal, make_sink, result, run


def seqs(out: Path) -> list[int]:
    entries = [parse_entry(x) for x in journal(out).read_bytes().splitlines(keepends=True)]
    return [e.seq for e in entries if e is not None]


def test_handler_returns_only_after_fsync(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    gate = threading.Event()
    fsynced: list[int] = []

    def slow_fsync(fd: int) -> None:
        gate.wait(10)
        os.fsync(fd)
        fsynced.append(fd)

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.ledger("b1")  # the ledger's header, fsynced normally
        await sink.close()
        sink, _ = make_sink(out, fsync=slow_fsync)
        await sink.start()
        # When a result is handled while fsync is stuck
        handler = asyncio.create_task(sink.handle_result(result("r1"), DELIVERY))
        await asyncio.sleep(0.3)
        # Then the line is written but the handler (→ FIN) waits for the fsync
        assert journal(out).read_text().count("\n") == 2  # header + entry
        assert not handler.done()
        assert fsynced == []
        gate.set()
        await handler
        assert fsynced, "fsync must have completed before the handler returned"
        await sink.close()

    run(scenario())


def test_lines_are_fsynced_in_batches(tmp_path: Path) -> None:
    calls: list[int] = []

    def counting_fsync(fd: int) -> None:
        calls.append(fd)

    async def scenario() -> None:
        sink, _ = make_sink(tmp_path / "out.jsonl", fsync=counting_fsync, every=50, interval=5)
        await sink.start()
        await asyncio.gather(
            *(sink.handle_result(result(f"r{i}", seq=i), DELIVERY) for i in range(200))
        )
        await sink.close()

    run(scenario())
    assert sorted(seqs(tmp_path / "out.jsonl")) == list(range(200))
    assert len(calls) <= 8  # 200 lines / 50 per fsync, not one per line


def test_failed_write_raises_and_leaves_no_partial_line(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    fail = {"on": True}

    def flaky_fsync(fd: int) -> None:
        if fail["on"]:
            raise OSError(5, "I/O error")

    async def scenario() -> None:
        sink, _ = make_sink(out, fsync=flaky_fsync)
        fail["on"] = False
        await sink.start()
        await sink.ledger("b1")
        fail["on"] = True
        header = journal(out).read_bytes()
        # When the fsync fails, the handler raises (→ the bus requeues)
        with pytest.raises(OSError):
            await sink.handle_result(result("r1"), DELIVERY)
        assert journal(out).read_bytes() == header
        # And the redelivery is written, not taken for a duplicate
        fail["on"] = False
        await sink.handle_result(result("r1"), DELIVERY)
        await sink.close()

    run(scenario())
    assert seqs(out) == [0]


def test_appender_close_flushes_pending_lines(tmp_path: Path) -> None:
    path = tmp_path / "f.jsonl"

    async def scenario() -> None:
        appender = SyncedAppender(path, every=1000, interval=60)
        fut = appender.submit(b'{"id": "x"}\n')
        await appender.close()
        assert fut.done() and fut.exception() is None

    run(scenario())
    assert path.read_text() == '{"id": "x"}\n'
