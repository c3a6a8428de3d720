"""A run's output: in input order from the ledger beside the input (`finalize.py`),
written by the sink's finisher at completion, or once the process stopped with the
records not run marked; then the journal goes (the output holds every record) and the
errors file is written (`errors_file.py`)."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.cli.run.errors_file import ErrorBreakdown, write_errors
from gpt4batch.cli.run.finalize import FinalCounts, write_final
from gpt4batch.services.ingest.reader import open_input, read_lines
from gpt4batch.services.run.job import MAX_LINE_BYTES


class RunOutput:
    """The output `out` of the input `source`."""

    def __init__(self, source: Path, out: Path) -> None:
        self.source = source
        self.out = out

    def write(self, journal: Path) -> FinalCounts:
        """Blocking: `out` from `journal` beside the input."""
        with open_input(str(self.source)) as lines:
            return write_final(read_lines(lines.stream, MAX_LINE_BYTES), journal, self.out)

    def end(
        self, journal: Path, *, written: FinalCounts | None, interrupted: bool
    ) -> tuple[FinalCounts, ErrorBreakdown]:
        """Blocking, once the run's process stopped: the output (written again if the run
        was stopped: what reached the ledger), the journal removed once the output holds
        every record, and the errors file."""
        final = written
        if interrupted or final is None:  # stopped: the output of what reached the ledger
            final = self.write(journal)
        if final.not_run == 0 and not interrupted:
            journal.unlink(missing_ok=True)  # the output is the record now
        return final, write_errors(self.out)
