"""A finished batch's output and error files, written from its ledger (blocking).

One line per request, in input order, each `custom_id` exactly once across the
two files. For an expired batch the requests without a result (never
published, or skipped by a caller after the stop) are read from the batch's
`asks.jsonl` and written to the error file as `batch_expired` — the line the
real API writes:

    {"id": "batch_req_…", "custom_id": "r7", "response": null,
     "error": {"code": "batch_expired", "message": "…"}}

`request_counts` then follow the real API for expired batches: `completed` and
`failed` count the requests that ran; the expired ones are neither (an
expired OpenAI batch of 10 with one answer reports total 10, completed 1,
failed 0).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt4batch.common.errors import IErrCode
from gpt4batch.services.gateway.result_lines import output_line
from gpt4batch.services.gateway.store import BatchRecord
from gpt4batch.services.sink.ledger.output import Entry, sorted_results

#: The iErr of a request that never ran because its batch expired.
EXPIRED = int(IErrCode.BATCH_EXPIRED)
EXPIRED_MESSAGE = "This request could not be executed before the completion window expired."

Written = dict[str, tuple[Path, int]]


def write_result_files(
    batch: BatchRecord, journal: Path, folder: Path, *, asks: Path | None = None
) -> tuple[Written, dict[str, int]]:
    """`output` and `error` temp files under `folder` with their line counts, and the
    batch's final `request_counts`. With `asks` (an expired batch), every request
    without a result is written as expired."""
    out_tmp, err_tmp = folder / "output.jsonl.tmp", folder / "errors.jsonl.tmp"
    ok = failed = expired = 0
    results = sorted_results(journal, folder)  # one per seq, in order
    if asks is not None:
        results = _with_expired(results, asks)
    with out_tmp.open("wb") as out, err_tmp.open("wb") as err:
        for _, good, record in results:
            if batch.format == "gpt4batch":
                out.write(record + b"\n")  # one output line per input record
                if not good:
                    err.write(record + b"\n")
                    code = (json.loads(record).get("iErr") or {}).get("code")
            else:
                parsed = json.loads(record)
                code = (parsed.get("iErr") or {}).get("code")
                converted, good = output_line(batch.id, parsed, batch.endpoint)
                data = json.dumps(converted, ensure_ascii=False).encode() + b"\n"
                (out if good else err).write(data)
            if good:
                ok += 1
            elif code == EXPIRED:
                expired += 1
            else:
                failed += 1
        for fh in (out, err):
            fh.flush()
            os.fsync(fh.fileno())
    errors = failed + expired
    out_lines = ok + errors if batch.format == "gpt4batch" else ok
    written = {"output": (out_tmp, out_lines), "error": (err_tmp, errors)}
    return written, {"total": batch.total, "completed": ok, "failed": failed}


def _with_expired(results: Iterator[Entry], asks: Path) -> Iterator[Entry]:
    """`results` with an expired entry for every seq of `asks.jsonl` (line n holds seq n)
    that has none."""
    pending = next(results, None)
    with asks.open("rb") as lines:
        for seq, line in enumerate(lines):
            if pending is not None and pending[0] == seq:
                yield pending
                pending = next(results, None)
            else:
                yield seq, False, _expired_record(json.loads(line)["record"])
    while pending is not None:
        yield pending
        pending = next(results, None)


def _expired_record(record: dict[str, Any]) -> bytes:
    record["iErr"] = {"code": EXPIRED, "message": EXPIRED_MESSAGE}
    return json.dumps(record, ensure_ascii=False).encode()
