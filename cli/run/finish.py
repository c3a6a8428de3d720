"""The end of a run, once its process has stopped: the output in input order from the
ledger (`finalize.py`), the journal removed when the output holds every record, and the
errors file (`errors_file.py`)."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.cli.run.errors_file import ErrorBreakdown, write_errors
from gpt4batch.cli.run.finalize import FinalCounts, write_final
from gpt4batch.services.ingest.reader import open_input, read_lines
from gpt4batch.services.run.job import MAX_LINE_BYTES


def finish(
    source: Path, journal: Path, out: Path, *, interrupted: bool
) -> tuple[FinalCounts, ErrorBreakdown]:
    """Blocking: write `out` from `journal` beside the input; the counts and the errors."""
    with open_input(str(source)) as lines:
        final = write_final(read_lines(lines.stream, MAX_LINE_BYTES), journal, out)
    if final.not_run == 0 and not interrupted:
        journal.unlink(missing_ok=True)  # the output is the record now
    return final, write_errors(out)
