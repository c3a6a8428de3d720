"""The stop path of a batch: the user's cancel, or its completion window passing.

A stopped batch publishes no more (its status says so) and every caller is told
(stops.py): they finish the batch's queued asks without calling the upstream, so
the spending stops with the calls already running. Once every published ask has
a result the batch's driver ends it `cancelled` / `expired`, the requests that
never ran in the error file (outputs.py).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import StopReason
from gpt4batch.services.gateway import expiry
from gpt4batch.services.gateway.batch_statuses import BatchStatuses
from gpt4batch.services.gateway.stops import StopNotices
from gpt4batch.services.gateway.store import BatchRecord, Store

log = get_logger("gpt4batch.gateway")


def announce_stop(notices: StopNotices, batch: BatchRecord, reason: StopReason) -> None:
    """The one path of a batch that stops spending (reason "cancelled" or "expired"):
    its status already stops the publishing; the callers are told to answer its
    published asks without calling (stops.py), until it is over."""
    log.info("batch stopped", batch=batch.id, reason=reason)
    if batch.published:
        notices.announce(batch.id, reason)


class BatchStopper:
    """Stops batches: under the batch's `lock`, then `nudge`s its driver to drain it."""

    def __init__(
        self,
        store: Store,
        statuses: BatchStatuses,
        notices: StopNotices,
        *,
        lock: Callable[[str], asyncio.Lock],
        nudge: Callable[[str], None],
    ) -> None:
        self.store = store
        self.statuses = statuses
        self.notices = notices
        self.lock = lock
        self.nudge = nudge

    async def stop(self, batch_id: str, reason: StopReason) -> BatchRecord | None:
        """Stop a batch's spending: the user cancelled it (validating or in progress), or
        its window passed (in progress; the driver does this itself, expiry.py).

        Nothing more is published; every caller is told (`announce_stop`) and finishes
        the batch's queued asks without calling the upstream; once every published ask
        has a result the batch ends `cancelled` / `expired`, the requests that never ran
        in the error file. Returns the batch (None: no such batch; unchanged if it had
        ended)."""
        async with self.lock(batch_id):
            batch = self.store.get_batch(batch_id, None)
            allowed = ("validating", "in_progress") if reason == "cancelled" else ("in_progress",)
            if batch is None or batch.status not in allowed or batch.expiring_at is not None:
                return batch
            if reason == "cancelled":
                batch.status = "cancelling"
                batch.cancelling_at = int(time.time())
            else:
                expiry.begin(batch, time.time())
            self.statuses.save(batch)
            announce_stop(self.notices, batch, reason)
        self.nudge(batch_id)
        return batch
