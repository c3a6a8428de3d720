"""Completion is decided once, by the sink, and written by the finisher its owner gives
(issue 20: one finisher): the file sink's own, `run`'s and the gateway's."""

from __future__ import annotations

import re
from pathlib import Path

from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.sink import Sink
from tests.sink.helpers import DELIVERY, completions, make_sink, manifest, result, run

ROOT = Path(__file__).resolve().parents[2]
#: A ledger's completion read (or switched off) outside the sink (not the webhook event
#: names `batch.completed`).
DECIDES = re.compile(r"\bready_to_complete\b|(ledger|\))\.completed\b|finish=False")


def recording_sink(out_dir: Path, calls: list[str]) -> Sink:
    async def finisher(ledger: BatchLedger) -> None:
        calls.append(ledger.batch)

    return Sink(out_dir=out_dir, interval=0.01, on_complete=finisher)


def test_a_batch_is_finished_once_per_completion_by_the_finisher_it_was_given(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        calls: list[str] = []
        sink = recording_sink(tmp_path, calls)
        await sink.start()
        await sink.handle_manifest(manifest(2), DELIVERY)
        await sink.handle_results(
            [(result("r0", seq=0), DELIVERY), (result("r1", seq=1, failed=True), DELIVERY)]
        )
        assert calls == ["b1"]
        # Late copies of its messages (redelivered, announced again) finish nothing again
        await sink.handle_result(result("r0", seq=0), DELIVERY)
        await sink.handle_results([(result("r1", seq=1, failed=True), DELIVERY)])
        await sink.handle_manifest(manifest(2), DELIVERY)
        assert calls == ["b1"]
        # What is written is the finisher's alone: no output, `.done` or notice of the file sink
        assert not (tmp_path / "b1.jsonl").exists() and not (tmp_path / "b1.done").exists()
        # A success replacing the failure reopens the batch: it completes, and is finished, again
        await sink.handle_result(result("r1", seq=1), DELIVERY)
        assert calls == ["b1", "b1"]
        await sink.close()

    run(scenario())


def test_the_file_sink_does_not_finish_a_completed_batch_again_after_a_restart(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        sink, bus = make_sink(out_dir=tmp_path)
        await sink.start()
        await sink.handle_manifest(manifest(1), DELIVERY)
        await sink.handle_result(result("r0", seq=0), DELIVERY)
        assert [m.status for m in completions(bus)] == ["complete"]
        await sink.close()
        done = (tmp_path / "b1.done").read_bytes()

        again, bus2 = make_sink(out_dir=tmp_path)
        await again.start()
        await again.handle_result(result("r0", seq=0), DELIVERY)  # a late copy
        await again.handle_manifest(manifest(1), DELIVERY)
        await again.close()
        assert completions(bus2) == [] and (tmp_path / "b1.done").read_bytes() == done

    run(scenario())


def test_a_restart_finishes_a_batch_its_owner_owns_that_completed_unfinished_once(
    tmp_path: Path,
) -> None:
    """The gateway's way: its finisher keeps no file; `owns` says which batches are still
    its to finish (a finished one's ledger is not even loaded again)."""

    async def scenario() -> None:
        for batch in ("open", "finished"):  # both complete on disk, neither finished
            ledger = BatchLedger(tmp_path / f"{batch}.jsonl", batch).load()
            await ledger.set_manifest(manifest(1, batch=batch))
            await ledger.add_result(result("r0", batch=batch, seq=0))
            await ledger.close()

        calls: list[str] = []

        async def finisher(ledger: BatchLedger) -> None:
            calls.append(ledger.batch)

        sink = Sink(out_dir=tmp_path, on_complete=finisher, owns=lambda batch: batch == "open")
        await sink.start()
        await sink.handle_result(result("r0", batch="open", seq=0), DELIVERY)  # a late copy
        await sink.handle_result(result("r0", batch="finished", seq=0), DELIVERY)
        assert calls == ["open"]
        assert [ledger.batch for ledger in sink.pool.loaded()] == ["open"]
        await sink.close()
        assert not (tmp_path / "open.done").exists()

    run(scenario())


def test_only_the_sink_reads_whether_a_batch_is_complete() -> None:
    """`run` and the gateway act on their finisher being called; neither asks the ledger
    again whether the batch is complete, and no owner can switch the sink's decision off."""
    readers = []
    for path in [*ROOT.glob("cli/**/*.py"), *ROOT.glob("services/**/*.py")]:
        if path.is_relative_to(ROOT / "services" / "sink"):
            continue
        if DECIDES.search(path.read_text()):
            readers.append(str(path.relative_to(ROOT)))
    assert readers == []
