"""The sink's bounds per unknown batch (issue 18): held batches, idle files, seqs, labels."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.messages import DeadLetter
from gpt4batch.services.sink.metrics import BatchGauges
from gpt4batch.services.sink.pool import Limits, StaleBatch
from gpt4batch.services.sink.sink import Sink
from tests.sink.helpers import DELIVERY, make_sink, manifest, result, run


def bounded_sink(out_dir: Path, **limits: float) -> Sink:
    sink, _ = make_sink(out_dir=out_dir)
    sink.limits = sink.pool.limits = Limits(**limits)  # type: ignore[arg-type]
    return sink


def open_fds(under: Path) -> int:
    """Descriptors this process holds on files under `under` (other descriptors come and
    go with the rest of the process: a count of all of them made this test flaky)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        count += target.startswith(str(under))
    return count


def test_batches_without_a_manifest_are_bounded_and_announced_ones_never_refused(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced=3, idle_seconds=3600)
        await sink.start()
        for n in range(3):
            await sink.handle_result(result("r", batch=f"junk{n}"), DELIVERY)
        # When a fourth batch without a manifest sends a result while three are busy
        with pytest.raises(Requeue) as caught:
            await sink.handle_result(result("r", batch="junk3"), DELIVERY)
        # Then it is requeued, counting toward max attempts, and no file is made for it
        assert caught.value.bounded and "--max-batches-without-manifest 3" in caught.value.reason
        assert not (tmp_path / "junk3.journal.jsonl").exists()
        outcomes = await sink.handle_results([(result("r", batch="junk4"), DELIVERY)])
        assert isinstance(outcomes[0], Requeue)
        # And a batch its manifest announced still goes through, results first or not
        await sink.handle_manifest(manifest(1, batch="real"), DELIVERY)
        await sink.handle_result(result("r", batch="real"), DELIVERY)
        assert (tmp_path / "real.done").exists()
        # And a manifest frees the place of the batch it announces
        await sink.handle_manifest(manifest(5, batch="junk0"), DELIVERY)
        await sink.handle_result(result("r", batch="junk3"), DELIVERY)
        await sink.close()

    run(scenario())


def test_an_idle_batch_without_a_manifest_gives_its_place_and_comes_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced=2, idle_seconds=0.05)
        await sink.start()
        await sink.handle_result(result("a0", batch="a", seq=0), DELIVERY)
        await sink.handle_result(result("b0", batch="b", seq=0), DELIVERY)
        await asyncio.sleep(0.1)
        # Given both are idle, a third takes the place of the least recently used
        await sink.handle_result(result("c0", batch="c", seq=0), DELIVERY)
        held = sorted(ledger.batch for ledger in sink.pool.loaded())
        assert held == ["b", "c"]
        # And the first, back later, is loaded again with what it had
        await asyncio.sleep(0.1)
        await sink.handle_result(result("a1", batch="a", seq=1), DELIVERY)
        ledger = await sink.ledger("a")
        assert ledger.is_done(0) and ledger.is_done(1) and ledger.counts.done == 2
        await sink.close()

    run(scenario())


def test_idle_batches_close_their_files_and_completed_ones_are_forgotten(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced=500, idle_seconds=30)
        await sink.start()
        before = open_fds(tmp_path)
        for n in range(50):
            await sink.handle_result(result("r", batch=f"b{n}"), DELIVERY)
        assert open_fds(tmp_path) >= before + 50  # each open batch's journal
        await sink.handle_manifest(manifest(1, batch="b0"), DELIVERY)  # b0 completes
        await sink.handle_result(result("r", batch="b0"), DELIVERY)  # a late copy loads it
        # When 30 s pass without a message
        used = sink.pool._used
        for path in used:
            used[path] -= 31
        await sink.pool.sweep()
        assert open_fds(tmp_path) <= before + 1
        assert "b0" not in {ledger.batch for ledger in sink.pool.loaded()}
        # A closed batch writes again on its next message
        await sink.handle_result(result("r1", batch="b7", seq=1), DELIVERY)
        assert len((tmp_path / "b7.journal.jsonl").read_text().splitlines()) == 3
        await sink.close()

    run(scenario())


def test_seqs_and_totals_beyond_the_record_limit_are_poison(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_records=1000)
        await sink.start()
        # A seq of 10^12 would make a 125 GB bitmap
        with pytest.raises(Poison, match="--max-batch-records"):
            await sink.handle_result(result("r", seq=10**12), DELIVERY)
        outcomes = await sink.handle_results(
            [(result("r", seq=1000), DELIVERY), (result("r", seq=999), DELIVERY)]
        )
        assert isinstance(outcomes[0], Poison) and outcomes[1] is None
        with pytest.raises(Poison, match="announces 1001 records"):
            await sink.handle_manifest(manifest(1001), DELIVERY)
        await sink.close()

    run(scenario())


def test_completed_and_idle_batches_keep_their_gauges_for_the_dashboard(tmp_path: Path) -> None:
    """The progress panel shows a completed batch at written = expected (it is dropped
    from memory at once, often before the next scrape) and keeps a stalled one in view."""

    def gauge(name: str, batch: str) -> float | None:
        return REGISTRY.get_sample_value(f"gpt4batch_sink_batch_{name}_records", {"batch": batch})

    async def scenario() -> None:
        sink = bounded_sink(tmp_path, idle_seconds=30)
        await sink.start()
        await sink.handle_manifest(manifest(1, batch="shown-done"), DELIVERY)
        await sink.handle_result(result("r", batch="shown-done"), DELIVERY)
        await sink.handle_manifest(manifest(2, batch="shown-idle"), DELIVERY)
        await sink.handle_result(result("r", batch="shown-idle"), DELIVERY)
        assert (tmp_path / "shown-done.done").exists()
        assert "shown-done" not in {ledger.batch for ledger in sink.pool.loaded()}
        # When the open batch is idle long enough to close its files
        for path in sink.pool._used:
            sink.pool._used[path] -= 31
        await sink.pool.sweep()
        # Then both still have their gauges
        assert (gauge("written", "shown-done"), gauge("expected", "shown-done")) == (1, 1)
        assert (gauge("written", "shown-idle"), gauge("expected", "shown-idle")) == (1, 2)
        await sink.close()

    run(scenario())


def test_per_batch_gauges_are_kept_for_a_bounded_number_of_batches() -> None:
    gauges = BatchGauges(limit=3)
    for n in range(10):
        gauges.written(f"labels{n}", n)
        gauges.total(f"labels{n}", 10)
    labelled = {
        s.labels["batch"]
        for metric in REGISTRY.collect()
        if metric.name.startswith("gpt4batch_sink_batch_")
        for s in metric.samples
        if s.labels.get("batch", "").startswith("labels")
    }
    assert labelled == {"labels7", "labels8", "labels9"}
    gauges.forget("labels9")
    gauges.forget("never-seen")
    for n in (7, 8):
        gauges.forget(f"labels{n}")


def test_a_batch_without_a_manifest_past_its_age_takes_no_more_results(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced_age=3600)
        await sink.start()
        await sink.handle_result(result("r0", batch="old", seq=0), DELIVERY)
        journal = tmp_path / "old.journal.jsonl"
        header = json.loads(journal.read_text().splitlines()[0])
        assert abs(header["started"] - time.time()) < 60  # kept across restarts
        # Given its first result came more than --max-manifestless-age ago
        ledger = await sink.ledger("old")
        assert ledger.started is not None
        ledger.started -= 3601
        lines = journal.read_text()
        # Then its further results are dead-lettered with the reason, and nothing is written
        with pytest.raises(StaleBatch, match="--max-manifestless-age"):
            await sink.handle_result(result("r1", batch="old", seq=1), DELIVERY)
        outcomes = await sink.handle_results([(result("r2", batch="old", seq=2), DELIVERY)])
        assert isinstance(outcomes[0], Poison) and "no manifest" in str(outcomes[0])
        # And the letter of a refused result does not write a line either
        refused = result("r1", batch="old", seq=1).model_dump_json()
        letter = DeadLetter(
            topic="t.results", channel="sink", service="sink", id="1", attempts=1,
            reason="stale", at=time.time(), body=refused, body_size=len(refused),
        )  # fmt: skip
        await sink.handle_dead(letter, DELIVERY)
        assert journal.read_text() == lines
        # And once its manifest is published it takes results again, whatever its age
        await sink.handle_manifest(manifest(2, batch="old"), DELIVERY)
        await sink.handle_result(result("r1", batch="old", seq=1), DELIVERY)
        assert (tmp_path / "old.done").exists()
        await sink.handle_result(result("n0", batch="new", seq=0), DELIVERY)  # a young one
        await sink.close()

    run(scenario())


def test_the_age_of_a_batch_without_a_manifest_survives_a_restart(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced_age=3600)
        await sink.start()
        await sink.handle_result(result("r0", batch="old", seq=0), DELIVERY)
        await sink.close()
        journal = tmp_path / "old.journal.jsonl"
        header, *entries = journal.read_text().splitlines(keepends=True)
        started = json.loads(header)
        started["started"] -= 7200
        journal.write_text(json.dumps(started) + "\n" + "".join(entries))
        again = bounded_sink(tmp_path, max_unannounced_age=3600)
        await again.start()
        with pytest.raises(StaleBatch):
            await again.handle_result(result("r1", batch="old", seq=1), DELIVERY)
        await again.close()

    run(scenario())


def test_the_files_of_dropped_batches_without_a_manifest_are_bounded(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path, max_unannounced=1, idle_seconds=0.01, max_dropped_kept=1)

        async def junk(batch: str) -> None:
            await asyncio.sleep(0.05)  # the one held is idle: this one takes its place
            await sink.handle_result(result("r", batch=batch), DELIVERY)

        await sink.start()
        await junk("j0")
        await junk("j1")  # j0 gives its place (its files are kept: 1 dropped batch)
        # A dropped batch whose manifest comes is loaded again: never removed
        await sink.handle_manifest(manifest(3, batch="j0"), DELIVERY)
        for batch in ("j2", "j3", "j4"):
            await junk(batch)
        # j1, j2 and j3 gave their places in turn; past one kept, the oldest's files went
        assert sorted(p.name for p in tmp_path.glob("*.journal.jsonl")) == [
            "j0.journal.jsonl",
            "j3.journal.jsonl",
            "j4.journal.jsonl",
        ]
        assert (tmp_path / "j0.manifest.json").exists()
        # And a removed batch that comes back starts afresh
        await junk("j1")
        assert (await sink.ledger("j1")).counts.done == 1
        await sink.close()

    run(scenario())


def test_the_sink_of_run_has_no_age_bound_for_its_own_batch(tmp_path: Path) -> None:
    """`run` sinks only its own batch (its manifest comes once ingest has read the input)."""

    async def scenario() -> None:
        sink = Sink(out=tmp_path / "out.jsonl", only_batch="mine")
        await sink.start()
        await sink.handle_result(result("r0", batch="mine", seq=0), DELIVERY)
        ledger = await sink.ledger("mine")
        assert ledger.started is not None
        ledger.started -= 30 * 24 * 3600
        await sink.handle_result(result("r1", batch="mine", seq=1), DELIVERY)
        assert ledger.counts.done == 2
        await sink.close()

    run(scenario())


def test_the_files_of_batches_without_a_manifest_are_bounded_across_restarts(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        sink = bounded_sink(tmp_path)
        await sink.start()
        await sink.handle_manifest(manifest(5, batch="m"), DELIVERY)
        for n, batch in enumerate(("m", "j0", "j1", "j2")):
            await sink.handle_result(result("r", batch=batch), DELIVERY)
            os.utime(tmp_path / f"{batch}.journal.jsonl", (1000.0 + n, 1000.0 + n))
        await sink.close()
        # When the sink starts again with room for one dropped batch's files
        again = bounded_sink(tmp_path, max_dropped_kept=1)
        await again.start()
        # Then the files of the longest unwritten go; the announced batch keeps its own
        assert sorted(p.name for p in tmp_path.glob("*.journal.jsonl")) == [
            "j2.journal.jsonl",
            "m.journal.jsonl",
        ]
        await again.close()

    run(scenario())
