"""The run's journal and the ordered final output, without any service."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gpt4batch.cli.run import finalize
from gpt4batch.cli.run.journal import Journal, SeqSet, entry_line, parse_entry
from gpt4batch.services.ingest.reader import read_lines


def make_input(path: Path, n: int) -> None:
    lines = [json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": "q"}]}) for i in range(n)]
    lines.insert(3, "")  # blank lines are not records
    path.write_text("\n".join(lines) + "\n")


def test_output_follows_input_order_whatever_the_journal_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, journal, out = tmp_path / "in.jsonl", tmp_path / "j.jsonl", tmp_path / "out.jsonl"
    make_input(source, 500)
    done = [s for s in range(500) if s % 7]  # every 7th record never finished
    order = done + random.Random(1).sample(done, 40)  # and some duplicates
    random.Random(2).shuffle(order)
    with journal.open("wb") as fh:
        fh.write(b'{"journal":1,"batch":"b","input":"x"}\n')
        for seq in order:
            record = json.dumps({"id": f"r{seq}", "asks": [], "answers": [], "iErr": None})
            fh.write(entry_line(seq, True, record))
    # Tiny chunks force many sorted runs spilled to disk and merged.
    monkeypatch.setattr(finalize, "CHUNK_BYTES", 2000)
    spills: list[int] = []
    real_spill = finalize._spill
    monkeypatch.setattr(
        finalize, "_spill", lambda entries, folder: spills.append(1) or real_spill(entries, folder)
    )
    with source.open("rb") as stream:
        counts = finalize.write_final(read_lines(stream, 1 << 20), journal, out)
    assert len(spills) > 10
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in records] == [f"r{i}" for i in range(500)]
    not_run = [r for r in records if r["iErr"]]
    assert all(r["iErr"]["code"] == finalize.NOT_RUN for r in not_run)
    assert [r["id"] for r in not_run] == [f"r{s}" for s in range(0, 500, 7)]
    assert (counts.total, counts.ok, counts.not_run) == (500, len(done), len(not_run))
    assert not list(tmp_path.glob("*.run")) and not list(tmp_path.glob(".out.jsonl.*"))


def test_entry_lines_round_trip() -> None:
    line = entry_line(42, False, '{"id":"x","iErr":{"code":1,"message":"m"}}')
    assert parse_entry(line) == (42, False, b'{"id":"x","iErr":{"code":1,"message":"m"}}')
    assert parse_entry(b'{"journal":1}\n') is None


def test_seq_set_is_a_growable_bitmap() -> None:
    seen = SeqSet()
    assert seen.add(0) and seen.add(1_000_003) and not seen.add(0)
    assert 1_000_003 in seen and 5 not in seen and seen.count == 2
    seen.discard(0)
    assert 0 not in seen and seen.count == 1


def test_a_journal_of_another_batch_is_moved_aside(tmp_path: Path) -> None:
    first = Journal(tmp_path / "out.jsonl", batch="one", input_path="a")
    first.load()
    with first.path.open("ab") as fh:
        fh.write(entry_line(0, True, '{"id":"r0","asks":[]}'))
        fh.write(b'{"seq":1,"ok":tr')  # torn by a crash
    again = Journal(tmp_path / "out.jsonl", batch="one", input_path="a")
    assert again.load() == 1  # the torn tail is cut, the whole line counts
    other = Journal(tmp_path / "out.jsonl", batch="two", input_path="b")
    assert other.load() == 0
    assert list(tmp_path.glob("out.journal.jsonl.*.old"))


def test_a_dead_lettered_ask_of_the_batch_still_gets_a_failed_line(tmp_path: Path) -> None:
    """Otherwise the run would wait forever for its result."""
    import asyncio

    from gpt4batch.common.bus import Delivery
    from gpt4batch.common.memory_bus import MemoryBus
    from gpt4batch.common.messages import AskMessage, Record

    async def scenario() -> Journal:
        bus = MemoryBus(max_attempts=1)
        journal = Journal(tmp_path / "out.jsonl", batch="b", input_path="in")
        journal.load()
        journal.register(bus)

        async def always_fails(msg: AskMessage, delivery: Delivery) -> None:
            raise RuntimeError("boom")

        bus.subscribe(bus.topics.asks, "caller", AskMessage, always_fails)
        await bus.start()
        record = Record.model_validate({"id": "r7", "asks": [{"id": "a", "content": "q"}]})
        await bus.publish(bus.topics.asks, AskMessage(batch="b", seq=7, record=record))
        await bus.publish(bus.topics.asks, AskMessage(batch="other", seq=8, record=record))
        for _ in range(200):
            if journal.counts.done:
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        await bus.stop(1)
        await journal.close()
        return journal

    journal = asyncio.run(scenario())
    assert journal.counts.done == 1 and journal.counts.failed == 1
    entries = [parse_entry(x) for x in journal.path.read_bytes().splitlines(keepends=True)]
    ((seq, ok, record),) = [e for e in entries if e is not None]
    assert (seq, ok) == (7, False)
    assert json.loads(record)["iErr"]["message"].startswith("dead-lettered: gave up after 1")
