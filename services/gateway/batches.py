"""A batch's life in the gateway: validate, publish in windows, watch the ledger, finalize.

    validating ─(bad lines)─────────────────────────────→ failed
        │ asks.jsonl written, manifest announced
    in_progress ─(ledger complete)→ finalizing ─(files)─→ completed
        │ cancel: stop publishing
    cancelling ─(every published ask answered)→ finalizing → cancelled
        │ its completion_window passed (expiry.py)
    finalizing, expiring ─(every published ask answered)→ expired

Asks go out in windows of `--window` unanswered asks (default: twice the callers'
concurrency, window.py). A stop (`stop`: the user's cancel, or the batch's window
passing) publishes no more and tells every caller (stops.py): they finish the
batch's queued asks without calling the upstream, so the spending stops with the
calls already running; the requests that never ran go to the error file
(outputs.py). A restart resumes publishing from the
`published_offset` saved after nsqd acknowledged each window. The results come
back on the gateway's own channel into the ledger; every status decision is
made from the ledger's counts, never from a timer (but for the window itself:
expiry.py). The sink decides that a batch is complete and calls the gateway's
finisher (`_finish`), which moves it to `finalizing`; its driver then writes
the output and error files (outputs.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import BatchManifest, Finishers, StopReason
from gpt4batch.common.topics import Channels
from gpt4batch.common.usage import batch_api_usage
from gpt4batch.services.gateway import expiry, metrics
from gpt4batch.services.gateway.convert import convert_file
from gpt4batch.services.gateway.outputs import write_result_files
from gpt4batch.services.gateway.serving import FleetServing, Serving
from gpt4batch.services.gateway.stops import StopNotices
from gpt4batch.services.gateway.store import ACTIVE_STATUSES, BatchRecord, Store, new_id
from gpt4batch.services.gateway.window import FleetWindow
from gpt4batch.services.sink.ledger import BatchLedger, LedgerCounts
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings

log = get_logger("gpt4batch.gateway")

PUBLISH_CHUNK = 500
#: Most bytes of asks one publishing step reads and sends: the step's bodies are held about
#: four times over (read, signed, framed, joined for the socket), so PUBLISH_CHUNK lines of
#: 100 KB took 150 MB at once; 1 MiB steps keep it near 4 MB whatever the lines' length.
PUBLISH_BYTES = 1024 * 1024


class Batches:
    """Every batch of one gateway, recorded by its own `SinkService` (the ledger) on the
    gateway's channel: only its own active batches, each change nudging the batch's
    driver, its completion (the sink's decision) calling `_finish`.

    Never call the sink's `maybe_complete` under a batch's lock: `_finish` takes it."""

    def __init__(
        self,
        store: Store,
        ledger: SinkSettings,
        *,
        window: int | None,
        max_line_bytes: int,
        max_msg_size: int,
        on_status: Callable[[str, str], None] | None = None,
        serving: FleetServing | None = None,
    ) -> None:
        self.store = store
        self.on_status = on_status  # called before a new status is stored (webhooks)
        self.serving = serving  # what the fleet's callers serve (None: not known)
        self.ledger = SinkService(
            ledger,
            channel=Channels.GATEWAY,
            owns=self.owns,
            on_progress=self._nudge,
            finisher=self._finish,
        )
        self.sink = self.ledger.sink
        self.window = FleetWindow(window)  # `--window`, else from the callers' concurrency
        self.stops = StopNotices()
        self.max_line_bytes = max_line_bytes
        self.max_msg_size = max_msg_size
        self.bus: Bus | None = None
        self._statuses: dict[str, str] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # --- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Pick up every batch a previous run left active (their ledgers: `owns`)."""
        for batch in self.store.batches():
            self._statuses[batch.id] = batch.status
        metrics.count_statuses(self._statuses)
        await self.ledger.start()

    def resume(self) -> None:
        """Once the bus is started: continue what was running before a restart."""
        for batch in self.store.batches():
            if batch.active:
                log.info("resuming batch", batch=batch.id, status=batch.status)
                if batch.stop_reason is not None and batch.published:
                    self.stops.announce(batch.id, batch.stop_reason)
                self._spawn(batch.id)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        await self.stops.close()
        await self.window.close()
        await self.ledger.close()

    def _spawn(self, batch_id: str) -> None:
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            self._tasks[batch_id] = asyncio.get_running_loop().create_task(self._drive(batch_id))

    def _save(self, batch: BatchRecord) -> None:
        changed = self._statuses.get(batch.id) != batch.status
        if changed and self.on_status is not None:
            self.on_status(batch.id, batch.status)  # durable first: no end goes unannounced
        self.store.save_batch(batch)
        if changed:
            self._statuses[batch.id] = batch.status
            metrics.count_statuses(self._statuses)

    # --- API operations --------------------------------------------------------------
    def create(
        self,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None,
        owner: str,
        output_expires_after: int | None = None,
    ) -> BatchRecord:
        batch = BatchRecord(
            id=new_id("batch_"),
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=completion_window,
            created_at=int(time.time()),
            metadata=metadata,
            owner=owner,
            output_expires_after=output_expires_after,
        )
        self._save(batch)
        self._spawn(batch.id)
        return batch

    async def cancel(self, batch_id: str) -> BatchRecord | None:
        return await self.stop(batch_id, "cancelled")

    async def stop(self, batch_id: str, reason: StopReason) -> BatchRecord | None:
        """Stop a batch's spending: the user cancelled it (validating or in progress), or
        its window passed (in progress; the driver does this itself, expiry.py).

        Nothing more is published; every caller is told (`_stopped`) and finishes the
        batch's queued asks without calling the upstream; once every published ask has a
        result the batch ends `cancelled` / `expired`, the requests that never ran in the
        error file. Returns the batch (None: no such batch; unchanged if it had ended)."""
        async with self._lock(batch_id):
            batch = self.store.get_batch(batch_id, None)
            allowed = ("validating", "in_progress") if reason == "cancelled" else ("in_progress",)
            if batch is None or batch.status not in allowed or batch.expiring_at is not None:
                return batch
            if reason == "cancelled":
                batch.status = "cancelling"
                batch.cancelling_at = int(time.time())
            else:
                expiry.begin(batch, time.time())
            self._save(batch)
            self._stopped(batch, reason)
        self._nudge(batch_id)
        return batch

    async def view(self, batch: BatchRecord) -> dict[str, Any]:
        """The Batch object of the API, its counts read from the ledger."""
        if batch.final_counts is not None:
            counts = batch.final_counts
        elif batch.status in ("validating", "failed"):
            counts = {"total": batch.total, "completed": 0, "failed": 0}
        else:
            c = await self._counts(batch.id)
            counts = {"total": batch.total, "completed": c.ok, "failed": c.failed}
        errors = None
        if batch.errors:
            errors = {"object": "list", "data": batch.errors}
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "in_progress_at": batch.in_progress_at,
            "expires_at": batch.expires_at,
            "finalizing_at": batch.finalizing_at,
            "completed_at": batch.completed_at,
            "failed_at": batch.failed_at,
            "expired_at": batch.expired_at,
            "cancelling_at": batch.cancelling_at,
            "cancelled_at": batch.cancelled_at,
            "request_counts": counts,
            "metadata": batch.metadata,
            "usage": None if batch.status in ("validating", "failed") else await self._usage(batch),
        }

    # --- results channel ---------------------------------------------------------------
    def owns(self, batch_id: str) -> bool:
        """Its active batches: a finished one's ledger is not loaded again at a restart,
        and a late copy of one of its messages is dropped."""
        return self._statuses.get(batch_id) in ACTIVE_STATUSES

    async def _counts(self, batch_id: str) -> LedgerCounts:
        return (await self.sink.ledger(batch_id)).counts

    async def _usage(self, batch: BatchRecord) -> dict[str, Any]:
        """What the batch's calls used and cost: saved with it once finalized (the ledger
        is not loaded again for it), else from its ledger."""
        if batch.final_usage is not None:
            return batch_api_usage(batch.final_usage)
        return batch_api_usage((await self.sink.ledger(batch.id)).usage.as_dict())

    async def _finish(self, ledger: BatchLedger) -> None:
        """The gateway's finisher (the sink found the batch complete): an in-progress batch
        to `finalizing`, saved at once; its driver writes the files (`_finalize`)."""
        batch_id = ledger.batch
        if self._statuses.get(batch_id) == "in_progress":
            async with self._lock(batch_id):
                batch = self.store.get_batch(batch_id, None)
                if batch is not None and batch.status == "in_progress":
                    batch.status = "finalizing"
                    batch.finalizing_at = int(time.time())
                    self._save(batch)
        self._nudge(batch_id)

    def _nudge(self, batch_id: str) -> None:
        event = self._wake.get(batch_id)
        if event is not None:
            event.set()

    def _stopped(self, batch: BatchRecord, reason: StopReason) -> None:
        """The one path of a batch that stops spending (reason "cancelled" or "expired"):
        its status already stops the publishing; the callers are told to answer its
        published asks without calling (stops.py), until it is over."""
        log.info("batch stopped", batch=batch.id, reason=reason)
        if batch.published:
            self.stops.announce(batch.id, reason)

    def _lock(self, batch_id: str) -> asyncio.Lock:
        return self._locks.setdefault(batch_id, asyncio.Lock())

    # --- the driver of one batch -------------------------------------------------------
    async def _drive(self, batch_id: str) -> None:
        wake = self._wake.setdefault(batch_id, asyncio.Event())
        pause = 0.0
        try:
            while True:
                wake.clear()
                try:
                    async with self._lock(batch_id):
                        batch = self.store.get_batch(batch_id, None)
                        if batch is None or not batch.active:
                            return
                        progressed = await self._step(batch)
                    pause = 0.0
                except Exception as exc:  # nsqd away, bus not started yet, disk full…
                    pause = min(30.0, max(0.5, pause * 2))
                    log.warning(
                        "batch step failed, retrying",
                        batch=batch_id,
                        error=str(exc),
                        wait=pause,
                        exc_info=not isinstance(exc, OSError),
                    )
                    await asyncio.sleep(pause)
                    continue
                if not progressed:
                    with contextlib.suppress(TimeoutError):
                        # The timeout only re-reads the ledger; decisions come from counts.
                        await asyncio.wait_for(
                            wake.wait(), expiry.wait_seconds(batch, 5, time.time())
                        )
        finally:
            self._wake.pop(batch_id, None)

    async def _step(self, batch: BatchRecord) -> bool:
        """Advance `batch` by one step; False when it must wait for results."""
        if expiry.is_due(batch, time.time()):
            expiry.begin(batch, time.time())
            self._save(batch)
            self._stopped(batch, "expired")
            return True
        if batch.expiring_at is not None:  # draining what was published (expiry.py)
            if expiry.drained(batch, (await self._counts(batch.id)).done):
                self.stops.over(batch.id)
                await self._finalize(batch)
                return True
            return False
        if batch.status == "validating":
            await self._validate(batch)
            return True
        if batch.status == "finalizing":
            await self._finalize(batch)
            return True
        written = (await self._counts(batch.id)).done
        if batch.status == "cancelling":
            if written >= batch.published:
                self.stops.over(batch.id)
                await self._finalize(batch, cancelled=True)
                return True
            return False
        # in_progress (the sink's finisher moves a complete batch to finalizing)
        room = self.window.size - (batch.published - written)
        if batch.published >= batch.total or room <= 0:
            return False
        await self._publish(batch, min(room, PUBLISH_CHUNK))
        return True

    async def _validate(self, batch: BatchRecord) -> None:
        source = self.store.file_path(batch.input_file_id)
        folder = self.store.batch_dir(batch.id)
        folder.mkdir(parents=True, exist_ok=True)
        asks = folder / "asks.jsonl"
        owned = self.store.file_ids_of(batch.owner)  # what its asks may name (gpt4batch lines)
        serving = await self.serving.now() if self.serving is not None else Serving(None)
        result = await asyncio.to_thread(self._convert, source, asks, batch, owned, serving)
        now = int(time.time())
        batch.format = result.format
        batch.total = result.total
        if batch.status == "cancelling":
            batch.status, batch.cancelled_at = "cancelled", now
        elif result.error_count:
            batch.status, batch.failed_at, batch.errors = "failed", now, result.errors
            metrics.LINES.labels("invalid").inc(result.error_count)
            log.info("batch failed validation", batch=batch.id, errors=result.error_count)
        else:
            assert self.bus is not None
            manifest = BatchManifest(
                batch=batch.id,
                total=batch.total,
                input=batch.input_file_id,
                finisher=Finishers.GATEWAY,
            )
            ledger = await self.sink.ledger(manifest.batch)  # the total, before any result
            await ledger.set_manifest(manifest)
            # Signed: a file sink on the same bus then leaves the batch to us.
            await self.bus.publish(self.bus.topics.batches, manifest, signed=True)
            batch.status, batch.in_progress_at = "in_progress", now
            metrics.LINES.labels("input").inc(batch.total)
            log.info("batch accepted", batch=batch.id, total=batch.total, format=batch.format)
        self._save(batch)

    def _convert(
        self, source: Path, asks: Path, batch: BatchRecord, owned: frozenset[str], serving: Serving
    ) -> Any:
        with asks.open("wb") as out:
            result = convert_file(
                source,
                out,
                serving=serving,
                owned_files=owned,
                batch=batch.id,
                endpoint=batch.endpoint,
                max_line_bytes=self.max_line_bytes,
                max_msg_size=self.max_msg_size,
            )
            out.flush()
            os.fsync(out.fileno())
        return result

    async def _publish(self, batch: BatchRecord, n: int) -> None:
        """Publish the next `n` asks; the offset is saved only after nsqd acknowledged."""
        assert self.bus is not None
        path = self.store.batch_dir(batch.id) / "asks.jsonl"
        bodies, end = await asyncio.to_thread(
            _read_lines, path, batch.published_offset, n, PUBLISH_BYTES
        )
        if not bodies:
            return
        await self.bus.publish_many(self.bus.topics.asks, bodies)
        batch.published += len(bodies)
        batch.published_offset = end
        self._save(batch)

    async def _finalize(self, batch: BatchRecord, *, cancelled: bool = False) -> None:
        if batch.status != "finalizing":
            batch.status = "finalizing"
            batch.finalizing_at = int(time.time())
        ledger = await self.sink.ledger(batch.id)
        folder = self.store.batch_dir(batch.id)
        # A stopped batch: the requests that never ran are read from its asks.
        reason = batch.stop_reason
        asks = folder / "asks.jsonl" if reason and batch.total else None
        written, counts = await asyncio.to_thread(
            write_result_files,
            batch,
            ledger.journal_path,
            folder,
            asks=asks,
            reason=reason or "expired",
        )
        for kind, (tmp, n) in written.items():
            if n:
                name = f"{batch.id}_{kind}.jsonl"
                file_id = self.store.add_file(
                    name, f"batch_{kind}", tmp, batch.owner, batch.output_expires_after
                ).id
                setattr(batch, f"{kind}_file_id", file_id)
                metrics.LINES.labels(kind).inc(n)
            else:
                tmp.unlink(missing_ok=True)
        batch.final_counts = counts
        batch.final_usage = ledger.usage.as_dict()
        now = int(time.time())
        if cancelled or batch.cancelling_at is not None:
            batch.status, batch.cancelled_at = "cancelled", now
        elif batch.expiring_at is not None:
            batch.status, batch.expired_at = "expired", now
        else:
            batch.status, batch.completed_at = "completed", now
        self._save(batch)
        log.info("batch finished", batch=batch.id, status=batch.status, **counts)


def _read_lines(path: Path, offset: int, n: int, max_bytes: int) -> tuple[list[bytes], int]:
    """Up to `n` whole lines from `offset` (fewer once they reach `max_bytes`, at least one),
    and the offset after them."""
    bodies: list[bytes] = []
    size = 0
    with path.open("rb") as fh:
        fh.seek(offset)
        while len(bodies) < n:
            line = fh.readline()
            if not line.endswith(b"\n"):
                break
            if bodies and size + len(line) > max_bytes:
                break
            bodies.append(line[:-1])
            size += len(line)
            offset += len(line)
    return bodies, offset
