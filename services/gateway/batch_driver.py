"""The drivers of the gateway's batches: one task per active batch, stepping it until it ends.

A driver takes the batch's lock for each step (batch_steps.py) and, when a step
made no progress, waits to be nudged (a result arrived, the batch was stopped or
finished by the sink) or at most a few seconds: that timeout only re-reads the
ledger, decisions come from its counts (but for the window itself: expiry.py).
A failing step (nsqd away, the bus not started yet, a full disk) is retried
with a growing pause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from gpt4batch.common.logging import get_logger
from gpt4batch.services.gateway import expiry
from gpt4batch.services.gateway.store import BatchRecord, Store

log = get_logger("gpt4batch.gateway")

Step = Callable[[BatchRecord], Awaitable[bool]]
"""Advances a batch by one step; False when it must wait for results."""


class BatchDrivers:
    """The driver task, lock and wake-up of every active batch of `store`."""

    def __init__(self, store: Store, step: Step) -> None:
        self.store = store
        self.step = step
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def spawn(self, batch_id: str) -> None:
        """Drive `batch_id` unless its driver is running."""
        task = self._tasks.get(batch_id)
        if task is None or task.done():
            self._tasks[batch_id] = asyncio.get_running_loop().create_task(self._drive(batch_id))

    def nudge(self, batch_id: str) -> None:
        """Wake the batch's driver: something it waits for may have changed."""
        event = self._wake.get(batch_id)
        if event is not None:
            event.set()

    def lock(self, batch_id: str) -> asyncio.Lock:
        """The batch's lock: held for each step, and for each change made from outside."""
        return self._locks.setdefault(batch_id, asyncio.Lock())

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def _drive(self, batch_id: str) -> None:
        wake = self._wake.setdefault(batch_id, asyncio.Event())
        pause = 0.0
        try:
            while True:
                wake.clear()
                try:
                    async with self.lock(batch_id):
                        batch = self.store.get_batch(batch_id, None)
                        if batch is None or not batch.active:
                            return
                        progressed = await self.step(batch)
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
