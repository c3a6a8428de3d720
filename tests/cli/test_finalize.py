"""The run's finalizer: the ordered final output from the ledger journal, beside the input."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from gpt4batch.cli.run import finalize
from gpt4batch.services.ingest.reader import read_lines
from gpt4batch.services.sink.ledger import entry_line, output


def make_input(path: Path, n: int) -> None:
    lines = [json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": "q"}]}) for i in range(n)]
    lines.insert(3, "")  # blank lines are not records
    path.write_text("\n".join(lines) + "\n")


def test_the_sort_chunk_is_small_and_grows_only_to_bound_the_runs() -> None:
    chunk = output.SORT_CHUNK_BYTES
    assert chunk <= 4 * 1024 * 1024  # the finalizer's share of run's memory stays small
    assert output.sort_chunk_bytes(0) == chunk
    assert output.sort_chunk_bytes(output.MAX_RUNS * chunk) == chunk
    huge = 10 * output.MAX_RUNS * chunk + 1
    assert -(-huge // output.sort_chunk_bytes(huge)) <= output.MAX_RUNS


def test_output_follows_input_order_whatever_the_journal_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source, journal, out = tmp_path / "in.jsonl", tmp_path / "j.jsonl", tmp_path / "out.jsonl"
    make_input(source, 500)
    done = [s for s in range(500) if s % 7]  # every 7th record never finished
    order = done + random.Random(1).sample(done, 40)  # and some duplicates
    random.Random(2).shuffle(order)
    with journal.open("wb") as fh:
        fh.write(b'{"ledger":2,"batch":"b"}\n')
        for seq in order:
            record = json.dumps({"id": f"r{seq}", "asks": [], "answers": [], "iErr": None})
            fh.write(entry_line(seq, True, record))
    # Tiny chunks force many sorted runs spilled to disk and merged.
    monkeypatch.setattr(output, "SORT_CHUNK_BYTES", 2000)
    spills: list[int] = []
    real_spill = output._spill
    monkeypatch.setattr(
        output, "_spill", lambda entries, folder: spills.append(1) or real_spill(entries, folder)
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
