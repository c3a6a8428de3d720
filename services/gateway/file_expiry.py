"""Deleting files whose `expires_after` (upload) or `output_expires_after` (batch) passed.

Every file's `expires_at` is in the store, so the sweeper keeps no state of its
own: it deletes what is due, sleeps until the soonest next `expires_at` or
`longest` seconds (a file added meanwhile may expire sooner: one small query
every few seconds), and after a restart deletes at once what fell due while
the gateway was down.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

from gpt4batch.common.logging import get_logger
from gpt4batch.services.gateway.store import Store

log = get_logger("gpt4batch.gateway")

#: The longest sleep between sweeps: how late a file may be deleted at most.
LONGEST_SLEEP = 5.0


class FileSweeper:
    """Deletes expired files once `start`ed on the event loop."""

    def __init__(self, store: Store, longest: float = LONGEST_SLEEP) -> None:
        self.store = store
        self.longest = longest
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    def sweep(self, now: float | None = None) -> int:
        """Delete every file due at `now`; how many were deleted."""
        due = self.store.expired_files(int(time.time() if now is None else now))
        for file_id, owner in due:
            if self.store.delete_file(file_id, owner):
                log.info("file expired and deleted", file=file_id)
        return len(due)

    async def _run(self) -> None:
        while True:
            try:
                self.sweep()
            except Exception as exc:  # a disk or database hiccup: the next round retries
                log.warning("file expiry sweep failed", error=str(exc))
            soonest = self.store.next_file_expiry()
            wait = self.longest if soonest is None else soonest - time.time()
            await asyncio.sleep(max(0.2, min(self.longest, wait)))

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
