"""`.done` + a `complete` manifest once the output holds the manifest's total."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import BatchManifest
from gpt4batch.services.sink.sink import Sink
from tests.sink.helpers import DELIVERY, completions, make_sink, manifest, result, run


def done_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".done").read_text())


def test_manifest_first_then_results(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(2), DELIVERY)
        await sink.handle_result(result("r1"), DELIVERY)
        assert completions(bus) == []
        await sink.handle_result(result("r2"), DELIVERY)
        assert [m.status for m in completions(bus)] == ["complete"]
        await sink.handle_result(result("r2"), DELIVERY)  # a late duplicate
        assert len(completions(bus)) == 1
        await sink.close()

    run(scenario())
    done = done_of(out)
    assert (done["batch"], done["total"], done["written"]) == ("b1", 2, 2)
    assert "finished_at" in done


def test_results_first_then_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r1"), DELIVERY)
        await sink.handle_result(result("r2"), DELIVERY)
        await sink.handle_manifest(manifest(2), DELIVERY)
        assert completions(bus) == [manifest(2).model_copy(update={"status": "complete"})]
        await sink.close()

    run(scenario())
    assert done_of(out)["written"] == 2


def test_complete_manifests_are_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        complete = BatchManifest(batch="b1", total=0, status="complete")
        await sink.handle_manifest(complete, DELIVERY)
        assert completions(bus) == []
        await sink.close()

    run(scenario())
    assert not (tmp_path / "out.manifest.json").exists()


def test_manifest_and_count_survive_restart(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def first() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(3), DELIVERY)
        await sink.handle_result(result("r1"), DELIVERY)
        await sink.handle_result(result("r2"), DELIVERY)
        await sink.close()

    async def second() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r3"), DELIVERY)
        assert [m.total for m in completions(bus)] == [3]
        await sink.close()

    run(first())
    assert not out.with_name("out.done").exists()
    run(second())
    assert done_of(out)["written"] == 3


def test_completion_missed_by_a_crash_is_done_at_start_up(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    out.write_text(result("r1").record.to_line() + "\n")
    (tmp_path / "out.manifest.json").write_text(manifest(1).model_dump_json())

    async def scenario() -> None:
        sink = Sink(out=out, interval=0.01)
        await sink.start()  # not bound to a bus yet: completion waits for it
        bus = MemoryBus(record=True)
        sink.bus = bus
        for _ in range(50):
            if completions(bus):
                break
            await asyncio.sleep(0.1)
        assert [m.status for m in completions(bus)] == ["complete"]
        await sink.close()

    run(scenario())
    assert done_of(out)["total"] == 1


def test_out_dir_completion_per_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        await sink.handle_manifest(manifest(1, batch="x"), DELIVERY)
        await sink.handle_manifest(manifest(2, batch="y"), DELIVERY)
        await sink.handle_result(result("r1", batch="x"), DELIVERY)
        await sink.handle_result(result("r1", batch="y"), DELIVERY)
        await sink.handle_result(result("r1", batch="x"), DELIVERY)  # duplicate after completion
        assert [m.batch for m in completions(bus)] == ["x"]
        await sink.close()

    run(scenario())
    assert (tmp_path / "x.done").exists()
    assert not (tmp_path / "y.done").exists()
    assert len((tmp_path / "x.jsonl").read_text().splitlines()) == 1


def test_out_dir_restart_finishes_batches_left_complete(tmp_path: Path) -> None:
    (tmp_path / "x.jsonl").write_text(result("r1", batch="x").record.to_line() + "\n")
    (tmp_path / "x.manifest.json").write_text(manifest(1, batch="x").model_dump_json())
    (tmp_path / "y.manifest.json").write_text(manifest(5, batch="y").model_dump_json())

    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        for _ in range(50):
            if completions(bus):
                break
            await asyncio.sleep(0.05)
        assert [m.batch for m in completions(bus)] == ["x"]
        await sink.close()

    run(scenario())
    assert done_of(tmp_path / "x.jsonl")["written"] == 1
    assert not (tmp_path / "y.done").exists()
