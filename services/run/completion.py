"""When a run's batch is complete: the embedded sink's ledger says so by its counts.

The sink calls `on_progress` when the ledger changed; once its counts say complete
the waiter is woken at once, so the run ends when its last line lands, not at the
next progress tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from gpt4batch.services.sink.ledger import BatchLedger

#: How often `wait` redraws the progress (completion wakes it at once).
PROGRESS_SECONDS = 0.2


class Completion:
    """Follows one batch's ledger until it is complete or a stop is asked for."""

    def __init__(self) -> None:
        self.complete = asyncio.Event()  # set once the ledger's counts say complete
        self._ledger: BatchLedger | None = None
        self._redraw: Callable[[], None] = lambda: None

    def follow(self, ledger: BatchLedger, redraw: Callable[[], None]) -> None:
        """The ledger, once open (the sink is built, with `on_progress`, before it loads it),
        and how to redraw the progress."""
        self._ledger = ledger
        self._redraw = redraw

    def on_progress(self, batch: str) -> None:
        """The sink's hook: wake `wait` once the ledger's counts say complete."""
        if self._ledger is not None and self._ledger.ready_to_complete:
            self.complete.set()

    async def wait(self, ingest_task: asyncio.Task[Any], stop: asyncio.Event) -> bool:
        """Until the ledger says the batch is complete (False) or a stop was asked for (True)."""
        ledger = self._ledger
        assert ledger is not None, "follow() the ledger first"
        stop_wait = asyncio.create_task(stop.wait())
        complete_wait = asyncio.create_task(self.complete.wait())
        try:
            while True:
                if stop.is_set():
                    return True
                if ingest_task.done():
                    ingest_task.result()  # raises if ingest failed
                    if ledger.ready_to_complete:
                        return False
                self._redraw()
                if complete_wait.done() and not ledger.ready_to_complete:
                    self.complete.clear()  # reopened since (a late success): wait again
                    complete_wait = asyncio.create_task(self.complete.wait())
                # Woken by a stop, the end of ingest or the ledger's counts; the timeout
                # only redraws the progress.
                waits = {w for w in (stop_wait, ingest_task, complete_wait) if not w.done()}
                await asyncio.wait(
                    waits, timeout=PROGRESS_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stop_wait.cancel()
            complete_wait.cancel()
