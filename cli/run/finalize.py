"""Write the run's output in input order from its batch ledger, in bounded memory.

The ledger's entries come sorted by seq (`services/sink/ordered.py`) and are
walked beside the input, line by line. An input line without a result (the
run was stopped first) is written as the input record with an `iErr` saying
so, so that `gpt4batch run -i OUT -f -o OUT.fix.jsonl` runs exactly what is missing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.common.errors import IErrCode
from gpt4batch.services.ingest.reader import RawLine
from gpt4batch.services.sink.ordered import atomic_output, sorted_results

#: iErr code of a record the run did not get to (client closed request, like nginx's 499).
NOT_RUN = int(IErrCode.NOT_RUN)
NOT_RUN_MESSAGE = "not run: the run was stopped before this record finished"
#: Journal bytes the finalizer sorts in memory at once (as entries about 1.4x that): 4 MiB
#: keeps its peak near 6 MB on top of the run (the sink's 16 MiB default took ~23 MB, the
#: largest part of `run`'s growth). Past MAX_RUNS x 4 MiB of journal (~1 GB, about a million
#: one-ask records) the chunks grow instead, so at most MAX_RUNS files are merged at once.
SORT_CHUNK_BYTES = 4 * 1024 * 1024
MAX_RUNS = 256


@dataclass
class FinalCounts:
    total: int = 0
    ok: int = 0
    failed: int = 0
    not_run: int = 0


def not_run_record(line: RawLine) -> bytes:
    """The input record of a line the run never finished, marked so `--fix` re-runs it."""
    ierr = {"code": NOT_RUN, "message": NOT_RUN_MESSAGE}
    try:
        obj = json.loads(line.data) if line.data is not None else None
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        obj = {"id": f"line:{line.number}", "asks": [], "answers": None}
    obj["iErr"] = ierr
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped output is still the same JSON
        return json.dumps(obj, separators=(",", ":")).encode()


def sort_chunk_bytes(journal_bytes: int) -> int:
    """The in-memory sort chunk for a journal of `journal_bytes`."""
    return max(SORT_CHUNK_BYTES, -(-journal_bytes // MAX_RUNS))


def write_final(input_lines: Iterable[RawLine], journal: Path, out: Path) -> FinalCounts:
    """Merge input and ledger journal into `out` (atomically: temp file, fsync, rename)."""
    counts = FinalCounts()
    with atomic_output(out) as fh:
        results = (
            sorted_results(journal, out.parent, sort_chunk_bytes(journal.stat().st_size))
            if journal.exists()
            else iter(())
        )
        pending = next(results, None)
        for seq, line in enumerate(input_lines):
            while pending is not None and pending[0] < seq:
                pending = next(results, None)
            counts.total += 1
            if pending is not None and pending[0] == seq:
                _, ok, record = pending
                if ok:
                    counts.ok += 1
                else:
                    counts.failed += 1
            else:
                record = not_run_record(line)
                counts.not_run += 1
            fh.write(record + b"\n")
    return counts
