"""Duplicates (NSQ is at-least-once) are dropped, also across restarts and torn writes."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gpt4batch.common.messages import ResultMessage
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


async def add_after_restart(out: Path, msg: ResultMessage) -> bool:
    """Start a sink on `out` as after a crash, deliver `msg` again; True if it was written."""
    sink, _ = make_sink(out)
    await sink.start()
    written = await (await sink.output_for(msg.batch)).add_result(msg)
    await sink.close()
    return written


def test_crash_between_output_line_and_reject_row_loses_and_repeats_nothing(
    tmp_path: Path,
) -> None:
    """The output line is durable, the reject row never made it: restart restores the row,
    and the redelivered result is a duplicate (not a second output line)."""
    out = tmp_path / "out.jsonl"
    refused = result("dup-id", seq=3, reject_line=4)
    out.write_text(refused.record.to_line() + "\n")  # as left by the crash

    assert run(add_after_restart(out, refused)) is False
    assert ids(out) == ["dup-id"]
    rows = [json.loads(x) for x in out.with_name("out.rejects.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == [4]


def test_reject_row_without_its_output_line_is_written_on_redelivery(tmp_path: Path) -> None:
    """The reject row alone is not proof of the output: the redelivery writes the line."""
    out = tmp_path / "out.jsonl"
    refused = result("dup-id", seq=3, reject_line=4)
    assert refused.reject is not None
    out.with_name("out.rejects.jsonl").write_text(refused.reject.model_dump_json() + "\n")

    assert run(add_after_restart(out, refused)) is True
    assert ids(out) == ["dup-id"]
    assert len(out.with_name("out.rejects.jsonl").read_text().splitlines()) == 1


def test_out_dir_never_puts_two_batches_in_one_file() -> None:
    from gpt4batch.services.sink.sink import batch_file_stem

    assert batch_file_stem("input-1a2b3c4d") == "input-1a2b3c4d"
    stems = {batch_file_stem(b) for b in ("a/x", "b/x", "x", "a b", "a_b")}
    assert len(stems) == 5
    assert all("/" not in s and " " not in s for s in stems)
