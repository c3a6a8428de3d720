"""A batch without a manifest: its output grows in arrival order (issue 19 item 8)."""

from __future__ import annotations

import os
from pathlib import Path

from gpt4batch.services.sink.sink import Sink
from tests.sink.helpers import DELIVERY, completions, ids, journal, make_sink, manifest, result, run


def streaming_sink(out: Path) -> tuple[Sink, object]:
    sink, bus = make_sink(out)
    sink.stream = True
    return sink, bus


def test_answers_without_a_manifest_appear_in_arrival_order_then_in_input_order(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = streaming_sink(out)
        await sink.start()
        # Given answers of a batch nobody announced
        await sink.handle_results([(result(f"r{s}", seq=s), DELIVERY) for s in (2, 0)])
        await sink.handle_result(result("r3", seq=3, failed=True), DELIVERY)
        # Then each is in the output at once, as it arrived
        assert ids(out) == ["r2", "r0", "r3"]
        await sink.handle_result(result("r0", seq=0), DELIVERY)  # a redelivery: not again
        await sink.handle_result(result("r3", seq=3), DELIVERY)  # a success replaces it
        await sink.handle_result(result("r1", seq=1), DELIVERY)
        assert ids(out) == ["r2", "r0", "r3", "r3", "r1"]
        assert completions(bus) == []  # type: ignore[arg-type]
        # When the manifest comes, the batch completes: one line per record, input order
        await sink.handle_manifest(manifest(4), DELIVERY)
        assert ids(out) == ["r0", "r1", "r2", "r3"] and (tmp_path / "out.done").exists()
        await sink.close()

    run(scenario())


def test_a_restart_rebuilds_the_open_output_from_the_journal(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def first() -> None:
        sink, _ = streaming_sink(out)
        await sink.start()
        for seq in (1, 0, 4):
            await sink.handle_result(result(f"r{seq}", seq=seq), DELIVERY)
        await sink.close()

    async def second() -> None:
        sink, _ = streaming_sink(out)
        await sink.start()
        await sink.handle_result(result("r2", seq=2), DELIVERY)
        await sink.close()

    run(first())
    assert ids(out) == ["r1", "r0", "r4"]
    # Given a crash lost the output's last line (the journal had it fsynced)
    with out.open("r+b") as fh:
        fh.truncate(len(out.read_bytes().splitlines(keepends=True)[0]))
    assert ids(out) == ["r1"] and len(journal(out).read_text().splitlines()) == 4
    # Then the next load of the open batch writes it again from the journal
    run(second())
    assert ids(out) == ["r1", "r0", "r4", "r2"]


def test_without_stream_the_output_appears_only_at_completion(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r0", seq=0), DELIVERY)
        assert not out.exists()
        await sink.handle_manifest(manifest(1), DELIVERY)
        assert ids(out) == ["r0"]
        await sink.close()

    run(scenario())
    assert not [p for p in os.listdir(out.parent) if p.endswith(".tmp")]
