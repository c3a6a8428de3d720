"""When a run's batch is complete: its embedded sink says so (`Sink.maybe_complete`, by
the ledger's counts) and calls the run's finisher, `Completion.finish`, which writes the
output and wakes the waiter at once, so the run ends when its last line lands, not at
the next progress tick.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from gpt4batch.services.sink.ledger import BatchLedger

#: How often `wait` redraws the progress (the finisher wakes it at once).
PROGRESS_SECONDS = 0.2

Written = TypeVar("Written")


class Completion(Generic[Written]):
    """The run's finisher (given to its `SinkService`) and the wait for it."""

    def __init__(self, write_output: Callable[[Path], Written]) -> None:
        self.write_output = write_output
        """Blocking: the output from the ledger's journal; returns what it wrote."""
        self.complete = asyncio.Event()  # set by the finisher, once the output is written
        self.written: Written | None = None  # what the output holds, once written

    async def finish(self, ledger: BatchLedger) -> None:
        """The finisher, called by the sink once the batch is complete (again after a late
        success replaced a failure): the output beside the input, then `wait` ends."""
        self.written = await asyncio.to_thread(self.write_output, ledger.journal_path)
        self.complete.set()

    async def wait(
        self, ingest_task: asyncio.Task[Any], stop: asyncio.Event, redraw: Callable[[], None]
    ) -> bool:
        """Until the sink finished the batch and ingest is done (False) or a stop was asked
        for (True)."""
        stop_wait = asyncio.create_task(stop.wait())
        complete_wait = asyncio.create_task(self.complete.wait())
        try:
            while True:
                if stop.is_set():
                    return True
                if ingest_task.done():
                    ingest_task.result()  # raises if ingest failed
                    if self.complete.is_set():
                        return False
                redraw()
                # Woken by a stop, the end of ingest or the finisher; the timeout only
                # redraws the progress.
                waits = {w for w in (stop_wait, ingest_task, complete_wait) if not w.done()}
                await asyncio.wait(
                    waits, timeout=PROGRESS_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stop_wait.cancel()
            complete_wait.cancel()
