"""The gateway's finisher (issue 20: one finisher): the sink decides that a batch is
complete and calls it once; it moves the batch to `finalizing` and writes no `.done`
and no `complete` notice. Without NSQ: the handlers are called directly."""

from __future__ import annotations

import asyncio
from pathlib import Path

from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.store import BatchRecord, Store
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.settings import embedded_settings
from tests.sink.helpers import DELIVERY, manifest, result

TOTAL = 2


def batches_of(data: Path) -> Batches:
    return Batches(
        Store(data),
        embedded_settings(out_dir=data / "ledger"),
        window=10,
        max_line_bytes=1 << 20,
        max_msg_size=1 << 20,
    )


def record(batch_id: str, status: str) -> BatchRecord:
    return BatchRecord(
        id=batch_id,
        input_file_id="file-1",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        created_at=1,
        status=status,
        total=TOTAL,
        published=TOTAL,
    )


def counting(batches: Batches, calls: list[str]) -> None:
    """Count the calls of the finisher the gateway gave its sink (it runs on)."""
    finish = batches.sink.on_complete

    async def counted(ledger: BatchLedger) -> None:
        calls.append(ledger.batch)
        await finish(ledger)

    batches.sink.on_complete = counted


async def answer_all(batches: Batches, batch_id: str) -> None:
    for seq in range(TOTAL):
        await batches.sink.handle_result(result(f"r{seq}", batch=batch_id, seq=seq), DELIVERY)


def test_the_sink_finishes_a_gateway_batch_once_into_finalizing(tmp_path: Path) -> None:
    async def scenario() -> None:
        batches = batches_of(tmp_path)
        batches.store.save_batch(record("batch_a", "in_progress"))
        calls: list[str] = []
        counting(batches, calls)
        await batches.start()
        ledger = await batches.sink.ledger("batch_a")
        await ledger.set_manifest(manifest(TOTAL, batch="batch_a"))
        await answer_all(batches, "batch_a")
        await answer_all(batches, "batch_a")  # late copies
        saved = batches.store.get_batch("batch_a", None)
        assert saved is not None and saved.status == "finalizing" and saved.finalizing_at
        assert calls == ["batch_a"]
        ledger_dir = tmp_path / "ledger"
        assert not (ledger_dir / "batch_a.done").exists()
        assert not (ledger_dir / "batch_a.jsonl").exists()  # the API's files are the output
        await batches.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))


def test_after_a_restart_a_completed_ledger_is_finished_once_and_a_finished_batch_never(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        # A gateway stopped after the last results of both batches were on disk; one of
        # them had been finalized into its files before the stop, the other not
        first = batches_of(tmp_path)
        for batch_id in ("batch_open", "batch_done"):
            first.store.save_batch(record(batch_id, "in_progress"))
        await first.start()
        for batch_id in ("batch_open", "batch_done"):
            ledger = await first.sink.ledger(batch_id)
            await ledger.set_manifest(manifest(TOTAL, batch=batch_id))
        first.sink.on_complete = lambda ledger: asyncio.sleep(0)  # stopped before its finisher
        await answer_all(first, "batch_open")
        await answer_all(first, "batch_done")
        await first.close()
        finished = record("batch_done", "completed")
        finished.final_counts = {"total": TOTAL, "completed": TOTAL, "failed": 0}
        first.store.save_batch(finished)

        again = batches_of(tmp_path)
        calls: list[str] = []
        counting(again, calls)
        await again.start()
        for _ in range(100):  # the sink finishes leftovers in the background
            if calls:
                break
            await asyncio.sleep(0.05)
        await answer_all(again, "batch_open")  # late copies
        await answer_all(again, "batch_done")
        assert calls == ["batch_open"]
        reopened = again.store.get_batch("batch_open", None)
        assert reopened is not None and reopened.status == "finalizing"
        held = {ledger.batch for ledger in again.sink.pool.loaded()}
        assert "batch_done" not in held  # a finished batch's ledger is not loaded again
        await again.close()

    asyncio.run(asyncio.wait_for(scenario(), 30))
