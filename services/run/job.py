"""A run's main job (`common/service.App.main`): ingest publishes the batch until the
sink has finished it (`Completion`) or a stop is asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress
from pathlib import Path
from typing import Any

from gpt4batch.common.bus import Bus
from gpt4batch.common.messages import Finishers
from gpt4batch.common.service import EXIT_ABORTED, EXIT_OK
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.reader import file_sha256, open_input, read_lines
from gpt4batch.services.run.completion import Completion
from gpt4batch.services.sink.ledger import BatchLedger

MAX_LINE_BYTES = 10 * 1024 * 1024


class RunJob:
    """Publishes the input's records not yet in the ledger; `interrupted` (True until the
    batch is complete) says how it ended, to the stop order and the summary."""

    def __init__(
        self,
        source: Path,
        *,
        batch: str,
        fix: bool,
        ledger: BatchLedger,
        completion: Completion[Any],
        on_ingested: Callable[[IngestSummary], None],
        redraw: Callable[[], None],
    ) -> None:
        self.source = source
        self.batch = batch
        self.fix = fix
        self.ledger = ledger
        self.completion = completion
        self.on_ingested = on_ingested
        self.redraw = redraw
        self.interrupted = True
        self.summary: IngestSummary | None = None
        self._task: asyncio.Task[IngestSummary] | None = None

    async def __call__(self, bus: Bus, stop: asyncio.Event) -> int:
        """Until the ledger says complete (EXIT_OK) or `stop` is set (EXIT_ABORTED)."""
        self._task = asyncio.create_task(self._ingest(bus))
        self.interrupted = await self.completion.wait(self._task, stop, self.redraw)
        return EXIT_ABORTED if self.interrupted else EXIT_OK

    async def stop_ingest(self) -> None:
        """The stop order's first stage: ingest publishes no more."""
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await task

    async def _ingest(self, bus: Bus) -> IngestSummary:
        digest = await asyncio.to_thread(file_sha256, self.source)
        with open_input(str(self.source)) as source:
            summary = await ingest(
                read_lines(source.stream, MAX_LINE_BYTES),
                bus,
                batch=self.batch,
                source=source.name,
                base_dir=source.base_dir,
                fix=self.fix,
                input_path=str(self.source.resolve()),
                input_sha256=digest,
                max_line_bytes=MAX_LINE_BYTES,
                skip=self.ledger.seen.__contains__,
                off_loop=True,  # the caller and sink share this loop
                finisher=Finishers.RUN,  # a file sink on the same bus leaves it to the run
            )
        self.summary = summary
        self.on_ingested(summary)
        return summary
