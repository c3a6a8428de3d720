"""Progress of a running ingest: one updating stderr line on a TTY, periodic log lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from gpt4batch.common.logging import get_logger
from gpt4batch.services.ingest.ingest import IngestSummary

log = get_logger("gpt4batch.ingest")


class Progress:
    """Callable given to `ingest(progress=…)`; throttles itself by time."""

    def __init__(
        self, stream: TextIO | None = None, log_every: float = 5.0, mode: str = "auto"
    ) -> None:
        """`mode`: auto (bar on a TTY, else log lines), bar or log, as `run --progress`."""
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.tty = mode == "bar" or (mode == "auto" and tty)
        self.every = 0.2 if self.tty else log_every
        self._last = time.monotonic()
        self._drawn = False

    def __call__(self, summary: IngestSummary) -> None:
        now = time.monotonic()
        final = summary.seconds > 0
        if not final and now - self._last < self.every:
            return
        self._last = now
        if self.tty:
            text = (
                f"\rread {summary.total:,}  published {summary.published:,}  "
                f"rejected {summary.rejected:,}  {summary.lines_per_second:,.0f} lines/s"
            )
            self.stream.write(text + ("\n" if final else ""))
            self.stream.flush()
        elif not final:
            log.info(
                "progress",
                read=summary.total,
                published=summary.published,
                rejected=summary.rejected,
                lines_per_s=round(summary.lines_per_second),
            )
