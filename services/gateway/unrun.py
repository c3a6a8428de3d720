"""The lines of a stopped batch that never ran, for its output files.

A cancelled or expired batch ends with some lines never published or finished
unrun by a caller (iErr 585/586). The real Batch API puts each unrun request in
the error file (`"error": {"code": "batch_cancelled" | "batch_expired"}`) and
counts it neither `completed` nor `failed`. `with_unrun` walks the ledger's
results (one per seq, in seq order) beside the batch's asks file (line n is seq
n) and supplies, for every seq without a result, the ask's record failed with
the stop's iErr: so the files hold every input line exactly once, in input
order, in bounded memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from gpt4batch.common.messages import STOPPED_CODES, StopReason, stopped_error

Entry = tuple[int, bool, bytes]  # seq, ok, record JSON (services/sink/ledger/output.py)


def with_unrun(
    results: Iterator[Entry], asks: Path, total: int, reason: StopReason
) -> Iterator[Entry]:
    """`results` with an unrun entry for each seq below `total` that has none."""
    if not asks.exists():  # stopped while validating: no line was read
        yield from results
        return
    ierr = stopped_error(reason).model_dump(mode="json")
    upcoming = next(results, None)
    with asks.open("rb") as lines:
        for seq in range(total):
            line = lines.readline()
            if upcoming is not None and upcoming[0] == seq:
                yield upcoming
                upcoming = next(results, None)
                continue
            record = json.loads(line)["record"] if line.strip() else {"id": str(seq)}
            record["answers"] = None
            record["iErr"] = ierr
            yield seq, False, json.dumps(record, ensure_ascii=False).encode()
    while upcoming is not None:  # (a seq past the total: not ours to drop)
        yield upcoming
        upcoming = next(results, None)


def was_run(record: bytes | dict[str, object]) -> bool:
    """False for a failed record that was never run because its batch stopped."""
    data = json.loads(record) if isinstance(record, bytes) else record
    ierr = data.get("iErr") if isinstance(data, dict) else None
    return not (isinstance(ierr, dict) and ierr.get("code") in STOPPED_CODES)
