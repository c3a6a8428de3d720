"""A batch's life in the gateway, put together: validate, publish in windows, watch the ledger,
finalize.

    validating ─(bad lines)─────────────────────────────→ failed
        │ asks.jsonl written, manifest announced
    in_progress ─(ledger complete)→ finalizing ─(files)─→ completed
        │ cancel: stop publishing
    cancelling ─(every published ask answered)→ finalizing → cancelled
        │ its completion_window passed (expiry.py)
    finalizing, expiring ─(every published ask answered)→ expired

Asks go out in windows of `--window` unanswered asks (default: twice the callers'
concurrency, window.py). A stop (`stop`: the user's cancel, or the batch's window
passing, batch_stop.py) publishes no more and tells every caller (stops.py): they
finish the batch's queued asks without calling the upstream, so the spending stops
with the calls already running; the requests that never ran go to the error file
(outputs.py). A restart resumes publishing from the `published_offset` saved after
nsqd acknowledged each window. The results come back on the gateway's own channel
into the ledger; every status decision is made from the ledger's counts, never from
a timer (but for the window itself: expiry.py). The sink decides that a batch is
complete and calls the gateway's finisher (`_finish`), which moves it to
`finalizing`; its driver (batch_driver.py) then writes the output and error files
(batch_steps.py, outputs.py).

The parts: statuses saved and announced (batch_statuses.py), the Batch object
(batch_view.py), the steps (batch_steps.py), the drivers (batch_driver.py), the
stop path (batch_stop.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import StopReason
from gpt4batch.common.topics import Channels
from gpt4batch.services.gateway.batch_driver import BatchDrivers
from gpt4batch.services.gateway.batch_statuses import BatchStatuses
from gpt4batch.services.gateway.batch_steps import BatchSteps
from gpt4batch.services.gateway.batch_stop import BatchStopper
from gpt4batch.services.gateway.batch_view import BatchView
from gpt4batch.services.gateway.serving import FleetServing
from gpt4batch.services.gateway.stops import StopNotices
from gpt4batch.services.gateway.store import BatchRecord, Store, new_id
from gpt4batch.services.gateway.window import FleetWindow
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings

log = get_logger("gpt4batch.gateway")


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
        self.statuses = BatchStatuses(store, on_status)
        self.ledger = SinkService(
            ledger,
            channel=Channels.GATEWAY,
            owns=self.statuses.owns,
            on_progress=self._nudge,
            on_complete=self._finish,
        )
        self.sink = self.ledger.sink
        self.window = FleetWindow(window)  # `--window`, else from the callers' concurrency
        self.stops = StopNotices()
        self.views = BatchView(self.sink)
        self.steps = BatchSteps(
            store,
            self.statuses,
            self.sink,
            self.views,
            self.window,
            self.stops,
            max_line_bytes=max_line_bytes,
            max_msg_size=max_msg_size,
            serving=serving,
        )
        self.drivers = BatchDrivers(store, self.steps.step)
        self.stopper = BatchStopper(
            store, self.statuses, self.stops, lock=self.drivers.lock, nudge=self.drivers.nudge
        )

    # --- lifecycle -----------------------------------------------------------------
    async def start(self) -> None:
        """Pick up every batch a previous run left active (their ledgers: `owns`)."""
        self.statuses.load()
        await self.ledger.start()

    def use_bus(self, bus: Bus) -> None:
        """The started bus: asks and manifests published on it, and the stop notices."""
        self.steps.bus = bus
        self.stops.bus = bus

    def resume(self) -> None:
        """Once the bus is started: continue what was running before a restart."""
        for batch in self.store.batches():
            if batch.active:
                log.info("resuming batch", batch=batch.id, status=batch.status)
                if batch.stop_reason is not None and batch.published:
                    self.stops.announce(batch.id, batch.stop_reason)
                self.drivers.spawn(batch.id)

    async def close(self) -> None:
        await self.drivers.close()
        await self.stops.close()
        await self.window.close()
        await self.ledger.close()

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
        self.statuses.save(batch)
        self.drivers.spawn(batch.id)
        return batch

    async def cancel(self, batch_id: str) -> BatchRecord | None:
        return await self.stop(batch_id, "cancelled")

    async def stop(self, batch_id: str, reason: StopReason) -> BatchRecord | None:
        """Stop a batch's spending (see `BatchStopper.stop`)."""
        return await self.stopper.stop(batch_id, reason)

    async def view(self, batch: BatchRecord) -> dict[str, Any]:
        """The Batch object of the API, its counts read from the ledger."""
        return await self.views.view(batch)

    # --- results channel ---------------------------------------------------------------
    async def _finish(self, ledger: BatchLedger) -> None:
        """The gateway's finisher (the sink found the batch complete): an in-progress batch
        to `finalizing`, saved at once; its driver writes the files (`BatchSteps`)."""
        batch_id = ledger.batch
        if self.statuses.of(batch_id) == "in_progress":
            async with self.drivers.lock(batch_id):
                batch = self.store.get_batch(batch_id, None)
                if batch is not None and batch.status == "in_progress":
                    batch.status = "finalizing"
                    batch.finalizing_at = int(time.time())
                    self.statuses.save(batch)
        self.drivers.nudge(batch_id)

    def _nudge(self, batch_id: str) -> None:
        self.drivers.nudge(batch_id)
