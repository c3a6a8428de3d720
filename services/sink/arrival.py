"""A batch's output while it is open: each record appended as it arrives (issue 19 item 8).

The sink writes `<stem>.jsonl` in input order once the batch is complete (its
manifest's total reached). Before that — and forever for a stream of asks that
no manifest announces — the same file holds the records in arrival order, so a
system that publishes asks sees its answers come out. A record that failed and
was answered again later appears twice here (the failure, then its
replacement); the completed output keeps one line per record.

The journal is the durable record; this file is a view of it. Appends are not
fsynced (the journal line is, before the message is finished), and `rebuild`
rewrites the file from the journal whenever the sink loads an open batch, so a
crash between the two writes never leaves an answer out for good.
"""

from __future__ import annotations

import os
from pathlib import Path

from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.index import iter_lines
from gpt4batch.services.sink.ledger.files import atomic_output
from gpt4batch.services.sink.ledger.journal import parse_entry

log = get_logger("gpt4batch.sink")


class ArrivalOutput:
    """Appends output records to `path` in the order they are written to the journal."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def append(self, records: list[bytes]) -> None:
        """Blocking: one write of `records`, a line each. A failure is logged, not raised:
        the journal has the records and the next load or the completion rewrites the file."""
        if not records:
            return
        data = b"".join(record + b"\n" for record in records)
        try:
            if self._fd is None:
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view) :]
        except OSError as exc:
            log.error("cannot append to a batch's output", path=str(self.path), error=str(exc))

    def rebuild(self, journal: Path) -> None:
        """Blocking: the journal's records in journal order, written over `path` atomically."""
        self.close()
        if not self.path.exists() and not any(
            parse_entry(line) is not None for line in iter_lines(journal)
        ):
            return  # nothing yet: the first append creates the file
        with atomic_output(self.path) as fh:
            for line in iter_lines(journal):
                if not line.endswith(b"\n"):
                    break
                entry = parse_entry(line)
                if entry is not None:
                    fh.write(entry.record + b"\n")

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
