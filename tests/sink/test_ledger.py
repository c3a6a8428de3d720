"""The batch ledger and the sink on it: completion by counts (records and files), output
in input order, duplicates, replacements, dead letters, restarts, one state per batch."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from gpt4batch.common.bus import Delivery
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, BatchManifest, Record, UsageLine
from gpt4batch.common.seqset import SeqSet
from gpt4batch.common.settings import load
from gpt4batch.common.topics import Topics
from gpt4batch.common.usage import UsageTotals
from gpt4batch.services.sink.ledger import (
    BatchLedger,
    entry_line,
    parse_entry,
    read_ledger,
)
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings
from tests.sink.helpers import (
    DELIVERY,
    completions,
    download,
    ids,
    journal,
    make_sink,
    manifest,
    result,
    run,
)


def done_of(out: Path) -> dict:
    return json.loads(out.with_name(out.stem + ".done").read_text())


def test_seq_set_is_a_growable_bitmap() -> None:
    seen = SeqSet()
    assert seen.add(0) and seen.add(1_000_003) and not seen.add(0)
    assert 1_000_003 in seen and 5 not in seen and seen.count == 2
    seen.discard(0)
    assert 0 not in seen and seen.count == 1
    full = SeqSet()
    for s in range(19):
        full.add(s)
    assert full.has_all_below(19) and not full.has_all_below(20)
    full.discard(9)
    assert not full.has_all_below(19) and list(full.missing_below(20)) == [9, 19]


def test_entry_lines_round_trip() -> None:
    line = entry_line(42, False, '{"id":"x]","iErr":{"code":1,"message":"m"}}', ["a].png", "b"])
    entry = parse_entry(line)
    assert entry is not None
    assert (entry.seq, entry.ok, entry.files) == (42, False, ["a].png", "b"])
    assert entry.record == b'{"id":"x]","iErr":{"code":1,"message":"m"}}'
    assert parse_entry(b'{"ledger":2,"batch":"b"}\n') is None


def test_complete_only_when_every_seq_is_in_and_output_is_in_input_order(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(3), DELIVERY)
        for seq in (2, 0):
            await sink.handle_result(result(f"r{seq}", seq=seq), DELIVERY)
        await sink.handle_result(result("r0-again", seq=0), DELIVERY)  # a redelivery
        assert completions(bus) == [] and not out.exists()
        await sink.handle_result(result("r1", seq=1), DELIVERY)
        assert [m.status for m in completions(bus)] == ["complete"]
        await sink.handle_result(result("r1", seq=1), DELIVERY)  # a late duplicate
        assert len(completions(bus)) == 1
        await sink.close()

    run(scenario())
    assert ids(out) == ["r0", "r1", "r2"]
    done = done_of(out)
    assert (done["batch"], done["total"], done["written"]) == ("b1", 3, 3)


def test_results_first_then_manifest(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r1", seq=1), DELIVERY)
        await sink.handle_result(result("r0", seq=0), DELIVERY)
        await sink.handle_manifest(manifest(2), DELIVERY)
        # Its results carried no usage (no caller made them): the totals are zero.
        usage = UsageLine.model_validate(UsageTotals().as_dict())
        complete = manifest(2).model_copy(update={"status": "complete", "usage": usage})
        assert completions(bus) == [complete]
        await sink.close()

    run(scenario())
    assert ids(out) == ["r0", "r1"]


def test_complete_only_when_every_planned_download_has_a_result(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_download(download("early.png"), DELIVERY)  # before its record
        await sink.handle_manifest(manifest(2), DELIVERY)
        await sink.handle_result(result("r0", seq=0, files=["a.png", "b.png"]), DELIVERY)
        await sink.handle_result(result("r1", seq=1, files=["early.png"]), DELIVERY)
        ledger = await sink.ledger("b1")
        assert ledger.records_complete and ledger.pending_downloads() == {"a.png", "b.png"}
        await sink.handle_download(download("a.png"), DELIVERY)
        await sink.handle_download(download("a.png"), DELIVERY)  # redelivered
        assert completions(bus) == [] and ledger.status == "open"
        await sink.handle_download(download("b.png", ok=False), DELIVERY)  # failed: a result
        assert [m.status for m in completions(bus)] == ["complete"]
        c = ledger.counts
        assert (c.downloads_planned, c.downloads_ok, c.downloads_failed) == (3, 2, 1)
        await sink.close()

    run(scenario())
    assert done_of(out)["downloads_failed"] == 1


def test_a_success_replaces_a_failure_even_after_completion(tmp_path: Path) -> None:
    """`ingest --fix` into the same batch: the re-run record replaces the failed one."""
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, bus = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(2), DELIVERY)
        await sink.handle_result(result("r0", seq=0), DELIVERY)
        await sink.handle_result(result("r1", seq=1, failed=True), DELIVERY)
        assert len(completions(bus)) == 1
        assert json.loads(out.read_text().splitlines()[1])["iErr"]["code"] == 500
        await sink.handle_result(result("r0", seq=0), DELIVERY)  # ok again: a duplicate
        await sink.handle_result(result("r1", seq=1), DELIVERY)  # the fix
        assert len(completions(bus)) == 2
        await sink.handle_result(result("r1", seq=1, failed=True), DELIVERY)  # never downgrades
        await sink.close()

    run(scenario())
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [(r["id"], r["iErr"]) for r in records] == [("r0", None), ("r1", None)]
    state = read_ledger(out)
    assert (state.counts.ok, state.counts.failed, state.counts.replaced) == (2, 0, 1)


def test_state_survives_restart_and_a_missed_completion_happens_at_start(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def first() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(2), DELIVERY)
        await sink.handle_result(result("r0", seq=0, files=["f.png"]), DELIVERY)
        await sink.handle_result(result("r1", seq=1), DELIVERY)
        await sink.close()

    async def crash_before_done() -> None:  # the last download row lands, then a crash
        ledger = BatchLedger(out, "b1").load()
        await ledger.add_download(download("f.png"))
        await ledger.close()

    async def second() -> list[BatchManifest]:
        sink, bus = make_sink(out)
        await sink.start()
        for _ in range(100):
            if completions(bus):
                break
            await asyncio.sleep(0.01)
        await sink.close()
        return completions(bus)

    run(first())
    assert read_ledger(out).status == "open" and not out.exists()
    run(crash_before_done())
    assert read_ledger(out).status == "ready"
    assert [m.status for m in run(second())] == ["complete"]
    assert ids(out) == ["r0", "r1"] and read_ledger(out).status == "complete"


def test_torn_tail_is_cut_and_another_batchs_journal_is_moved_aside(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    BatchLedger(out, "one").load()
    with journal(out).open("ab") as fh:
        fh.write(entry_line(0, True, '{"id":"r0","asks":[]}'))
        fh.write(b'{"seq":1,"ok":tr')  # torn by a crash
    assert read_ledger(out).counts.done == 1  # a reader skips the torn tail
    assert BatchLedger(out, "one").load().counts.done == 1
    assert journal(out).read_bytes().endswith(b"}\n")
    assert BatchLedger(out, "two").load().counts.done == 0
    assert list(tmp_path.glob("out.journal.jsonl.*.old"))


def test_a_new_journal_appears_with_its_header(tmp_path: Path) -> None:
    """A reader (`status`, the compose test) found a journal created but still empty and
    could not tell whose ledger it was: the header is written aside and renamed in."""
    out = tmp_path / "out.jsonl"
    seen_while_syncing: list[bool] = []

    def fsync(fd: int) -> None:
        seen_while_syncing.append(journal(out).exists())

    BatchLedger(out, "one", fsync=fsync).load()
    assert seen_while_syncing and not seen_while_syncing[0]  # named only once durable
    assert read_ledger(out).batch == "one"
    assert json.loads(journal(out).read_bytes().splitlines()[0])["batch"] == "one"


def test_queryable_state(tmp_path: Path) -> None:
    out = tmp_path / "b.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_manifest(manifest(4), DELIVERY)
        await sink.handle_result(result("r0", seq=0, files=["x.png"]), DELIVERY)
        await sink.handle_result(result("r2", seq=2, failed=True), DELIVERY)
        await sink.close()

    run(scenario())
    state = read_ledger(out)
    assert state.batch == "b1" and state.status == "open"
    assert (state.counts.total, state.counts.done, state.counts.failed) == (4, 2, 1)
    assert state.is_done(0) and not state.is_failed(0) and state.is_failed(2)
    assert list(state.missing_seqs()) == [1, 3]
    assert state.pending_downloads() == {"x.png"}


def test_reject_rows_are_written_and_restored_after_a_crash(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    rejects = tmp_path / "out.rejects.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(result("dup", seq=3, reject_line=4), DELIVERY)
        await sink.close()

    run(scenario())
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [4]
    rejects.write_text("")  # the crash came between the entry and its reject row
    BatchLedger(out, "b1").load()
    assert [json.loads(x)["line"] for x in rejects.read_text().splitlines()] == [4]


def test_out_dir_and_one_file_keep_one_state_per_batch(tmp_path: Path) -> None:
    async def scenario(sink_out: dict) -> None:
        sink, bus = make_sink(**sink_out)
        await sink.start()
        for batch, n in (("alpha", 2), ("beta", 1)):
            await sink.handle_manifest(manifest(n, batch), DELIVERY)
            for seq in range(n):
                await sink.handle_result(result(f"{batch}{seq}", batch, seq), DELIVERY)
        assert [m.batch for m in completions(bus) if m.status == "complete"] == ["alpha", "beta"]
        await sink.close()

    run(scenario({"out_dir": tmp_path / "d"}))
    assert ids(tmp_path / "d" / "alpha.jsonl") == ["alpha0", "alpha1"]
    assert ids(tmp_path / "d" / "beta.jsonl") == ["beta0"]
    # -o FILE: the first batch owns the file; another gets its own file, count and .done
    run(scenario({"out": tmp_path / "o.jsonl"}))
    assert ids(tmp_path / "o.jsonl") == ["alpha0", "alpha1"]
    assert done_of(tmp_path / "o.jsonl")["batch"] == "alpha"
    assert ids(tmp_path / "o.beta.jsonl") == ["beta0"]
    assert done_of(tmp_path / "o.beta.jsonl")["batch"] == "beta"


def test_a_dead_lettered_ask_still_lets_the_service_complete_the_batch(tmp_path: Path) -> None:
    """Service mode: the ask that can never be handled becomes a failed line, then `.done`."""
    out = tmp_path / "out.jsonl"
    settings = load(SinkSettings, out=str(out), fsync_interval_ms=5)

    async def scenario() -> None:
        bus = MemoryBus(service="t", topics=Topics("t"), max_attempts=1, record=True)
        service = SinkService(settings)
        await service.start()
        service.register(bus)

        async def caller(msg: AskMessage, delivery: Delivery) -> None:
            if msg.seq == 1:
                raise RuntimeError("boom")
            await bus.publish(bus.topics.results, result(msg.record.id, "b1", msg.seq))

        bus.subscribe(bus.topics.asks, "caller", AskMessage, caller)
        await bus.start()
        for seq in range(3):
            record = Record.model_validate({"id": f"r{seq}", "asks": [{"id": "a", "content": "q"}]})
            await bus.publish(bus.topics.asks, AskMessage(batch="b1", seq=seq, record=record))
        await bus.publish(bus.topics.batches, manifest(3))
        for _ in range(300):
            if (tmp_path / "out.done").exists():
                break
            await asyncio.sleep(0.02)
        await bus.stop(grace=1)
        await service.close()

    run(scenario())
    records = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in records] == ["r0", "r1", "r2"]
    assert records[1]["iErr"]["code"] == 589
    assert records[1]["iErr"]["message"].startswith("dead-lettered: gave up after 1")
    assert done_of(out)["failed"] == 1
