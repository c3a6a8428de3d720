"""Telling every caller that a batch stopped (cancelled or expired), until it is over.

A stop is a signed `BatchStopped` on the ephemeral topic `…stopped#ephemeral`
(common/topics.py): each caller hears it on its own ephemeral channel and
finishes the batch's asks without calling the upstream (services/caller/stopped.py).
Nothing is kept for callers that are not there, and nsqd may drop a notice
(an ephemeral channel discards what it cannot hold), so the gateway announces
each stop at once and then again every `every` seconds until the batch's driver
says it is over (every published ask has a result): a caller that starts
after the cancel, or missed a notice, learns it within `every` seconds. One
small message per stopped batch per round; a batch is stopping only while its
window of asks drains, a few seconds.
"""

from __future__ import annotations

import asyncio
import contextlib

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import BatchStopped, StopReason

log = get_logger("gpt4batch.gateway")

#: Seconds between announcements of the same stop.
ANNOUNCE_EVERY = 1.0


class StopNotices:
    """The stops being announced, and the task that announces them."""

    def __init__(self, every: float = ANNOUNCE_EVERY) -> None:
        self.every = every
        self.bus: Bus | None = None
        self._stopping: dict[str, StopReason] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def announce(self, batch_id: str, reason: StopReason) -> None:
        """Announce that `batch_id` stopped, now and every `every` s until `over`."""
        self._stopping[batch_id] = reason
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._announce())

    def over(self, batch_id: str) -> None:
        """Every published ask of the batch has a result: no more announcements."""
        self._stopping.pop(batch_id, None)

    @property
    def stopping(self) -> dict[str, StopReason]:
        return dict(self._stopping)

    async def _announce(self) -> None:
        while self._stopping:
            self._wake.clear()
            if self.bus is not None:  # none yet: the bus is being started
                notices = [BatchStopped(batch=b, reason=r) for b, r in self._stopping.items()]
                try:
                    await self.bus.publish_many(self.bus.topics.stopped, notices)
                except Exception as exc:  # nsqd away: the next round tries again
                    log.warning("cannot announce stopped batches", error=str(exc))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.every)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
