"""One step of a batch, by its status: validate, publish the next asks, or finalize.

    validating ─(bad lines)─────────────────────────────→ failed
        │ asks.jsonl written, manifest announced
    in_progress ─(room in the window)→ publish the next asks
        │ the sink's finisher moved it to finalizing
    finalizing ─(files)─→ completed / cancelled / expired

Asks go out in windows of `--window` unanswered asks (window.py); the
`published_offset` is saved only after nsqd acknowledged them, so a restart
resumes from there. Every decision is made from the ledger's counts, but for
the batch's window itself (expiry.py).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import BatchManifest, Finishers
from gpt4batch.services.gateway import expiry, metrics
from gpt4batch.services.gateway.batch_statuses import BatchStatuses
from gpt4batch.services.gateway.batch_stop import announce_stop
from gpt4batch.services.gateway.batch_view import BatchView
from gpt4batch.services.gateway.convert import convert_file
from gpt4batch.services.gateway.outputs import write_result_files
from gpt4batch.services.gateway.serving import FleetServing, Serving
from gpt4batch.services.gateway.stops import StopNotices
from gpt4batch.services.gateway.store import BatchRecord, Store
from gpt4batch.services.gateway.window import FleetWindow
from gpt4batch.services.sink.sink import Sink

log = get_logger("gpt4batch.gateway")

PUBLISH_CHUNK = 500
#: Most bytes of asks one publishing step reads and sends: the step's bodies are held about
#: four times over (read, signed, framed, joined for the socket), so PUBLISH_CHUNK lines of
#: 100 KB took 150 MB at once; 1 MiB steps keep it near 4 MB whatever the lines' length.
PUBLISH_BYTES = 1024 * 1024


class BatchSteps:
    """Advances one batch at a time (its driver holds the batch's lock); `bus` is set
    once the bus is started."""

    def __init__(
        self,
        store: Store,
        statuses: BatchStatuses,
        sink: Sink,
        view: BatchView,
        window: FleetWindow,
        notices: StopNotices,
        *,
        max_line_bytes: int,
        max_msg_size: int,
        serving: FleetServing | None = None,
    ) -> None:
        self.store = store
        self.statuses = statuses
        self.sink = sink
        self.view = view  # the ledger's counts
        self.window = window
        self.notices = notices
        self.max_line_bytes = max_line_bytes
        self.max_msg_size = max_msg_size
        self.serving = serving  # what the fleet's callers serve (None: not known)
        self.bus: Bus | None = None

    async def step(self, batch: BatchRecord) -> bool:
        """Advance `batch` by one step; False when it must wait for results."""
        if expiry.is_due(batch, time.time()):
            expiry.begin(batch, time.time())
            self.statuses.save(batch)
            announce_stop(self.notices, batch, "expired")
            return True
        if batch.expiring_at is not None:  # draining what was published (expiry.py)
            if expiry.drained(batch, (await self.view.counts(batch.id)).done):
                self.notices.over(batch.id)
                await self._finalize(batch)
                return True
            return False
        if batch.status == "validating":
            await self._validate(batch)
            return True
        if batch.status == "finalizing":
            await self._finalize(batch)
            return True
        written = (await self.view.counts(batch.id)).done
        if batch.status == "cancelling":
            if written >= batch.published:
                self.notices.over(batch.id)
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
        self.statuses.save(batch)

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
            read_lines, path, batch.published_offset, n, PUBLISH_BYTES
        )
        if not bodies:
            return
        await self.bus.publish_many(self.bus.topics.asks, bodies)
        batch.published += len(bodies)
        batch.published_offset = end
        self.statuses.save(batch)

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
        self.statuses.save(batch)
        log.info("batch finished", batch=batch.id, status=batch.status, **counts)


def read_lines(path: Path, offset: int, n: int, max_bytes: int) -> tuple[list[bytes], int]:
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
