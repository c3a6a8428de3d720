"""Write the run's output in input order from its batch ledger, in bounded memory.

The ledger's entries come sorted by seq (`services/sink/ledger/output.py`) and are
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
from gpt4batch.services.sink.ledger.files import atomic_output
from gpt4batch.services.sink.ledger.output import sorted_results

#: iErr code of a record the run did not get to (client closed request, like nginx's 499).
NOT_RUN = int(IErrCode.NOT_RUN)
NOT_RUN_MESSAGE = "not run: the run was stopped before this record finished"


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


def write_final(input_lines: Iterable[RawLine], journal: Path, out: Path) -> FinalCounts:
    """Merge input and ledger journal into `out` (atomically: temp file, fsync, rename)."""
    counts = FinalCounts()
    with atomic_output(out) as fh:
        results = sorted_results(journal, out.parent) if journal.exists() else iter(())
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
