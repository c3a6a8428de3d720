"""Duplicates (NSQ is at-least-once) are dropped, also across restarts and torn writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from tests.sink.helpers import DELIVERY, ids, make_sink, result, run


def test_duplicate_in_same_pending_batch_is_written_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out, interval=0.05)
        await sink.start()
        await asyncio.gather(
            sink.handle_result(result("r1"), DELIVERY),
            sink.handle_result(result("r1"), DELIVERY),
            sink.handle_result(result("r2"), DELIVERY),
        )
        await sink.handle_result(result("r1"), DELIVERY)
        await sink.close()

    run(scenario())
    assert ids(out) == ["r1", "r2"]


def test_duplicates_dropped_across_restart(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def first() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        for rid in ("r1", "r2"):
            await sink.handle_result(result(rid), DELIVERY)
        await sink.close()

    async def second() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        for rid in ("r2", "r3", "r1"):
            await sink.handle_result(result(rid), DELIVERY)
        await sink.close()

    run(first())
    run(second())
    assert ids(out) == ["r1", "r2", "r3"]


def test_partial_last_line_is_cut_at_start_up(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    good = [result("r1").record.to_line(), result("r2").record.to_line()]
    torn = result("r3").record.to_line()[:25]
    out.write_text("\n".join(good) + "\n" + torn)

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        assert out.read_text() == "\n".join(good) + "\n"
        await sink.handle_result(result("r3"), DELIVERY)  # the redelivery
        await sink.handle_result(result("r2"), DELIVERY)
        await sink.close()

    run(scenario())
    lines = out.read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == ["r1", "r2", "r3"]


def test_output_line_is_the_record_round_trip(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    msg = result("r1")

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(msg, DELIVERY)
        await sink.close()

    run(scenario())
    assert out.read_text() == msg.record.to_line() + "\n"
