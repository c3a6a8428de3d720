"""A finished batch's output and error files, written from its ledger (blocking).

One line per request, in input order, each `custom_id` exactly once across the
two files. For a stopped (expired or cancelled) batch the requests without a
result (never published, or answered unrun by a caller after the stop) are read
from the batch's `asks.jsonl` and written to the error file as `batch_expired`
/ `batch_cancelled` — the line the real API writes:

    {"id": "batch_req_…", "custom_id": "r7", "response": null,
     "error": {"code": "batch_expired", "message": "…"}}

`request_counts` then follow the real API: `completed` and `failed` count the
requests that ran; the unrun ones are neither (an expired OpenAI batch of 10
with one answer reports total 10, completed 1, failed 0; a cancelled one of 8
with 4 answers, completed 4, failed 0, with an error file).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt4batch.common.messages import STOPPED_CODES, StopReason, stopped_error
from gpt4batch.services.gateway.result_lines import output_json
from gpt4batch.services.gateway.store import BatchRecord
from gpt4batch.services.sink.ledger.files import atomic_output
from gpt4batch.services.sink.ledger.output import Entry, sorted_results

Written = dict[str, tuple[Path, int]]


def write_result_files(
    batch: BatchRecord,
    journal: Path,
    folder: Path,
    *,
    asks: Path | None = None,
    reason: StopReason = "expired",
) -> tuple[Written, dict[str, int]]:
    """`output` and `error` files under `folder` (each written whole by the one atomic
    writer, for the store to move into place) with their line counts, and the batch's
    final `request_counts`. With `asks` (a stopped batch), every request without a
    result is written as not run for `reason`."""
    out_path, err_path = folder / "output.jsonl", folder / "errors.jsonl"
    ok = failed = unrun = 0
    results = sorted_results(journal, folder)  # one per seq, in order
    if asks is not None:
        results = _with_unrun(results, asks, reason)
    with atomic_output(out_path) as out, atomic_output(err_path) as err:
        for _, good, record in results:
            if batch.format == "gpt4batch":
                out.write(record + b"\n")  # one output line per input record
                if not good:
                    err.write(record + b"\n")
                    code = (json.loads(record).get("iErr") or {}).get("code")
            else:
                parsed = json.loads(record)
                code = (parsed.get("iErr") or {}).get("code")
                data, good = output_json(batch.id, parsed, batch.endpoint)
                data += b"\n"
                (out if good else err).write(data)
            if good:
                ok += 1
            elif code in STOPPED_CODES:
                unrun += 1
            else:
                failed += 1
    errors = failed + unrun
    out_lines = ok + errors if batch.format == "gpt4batch" else ok
    written = {"output": (out_path, out_lines), "error": (err_path, errors)}
    return written, {"total": batch.total, "completed": ok, "failed": failed}


def _with_unrun(results: Iterator[Entry], asks: Path, reason: StopReason) -> Iterator[Entry]:
    """`results` with an unrun entry (iErr of `reason`) for every seq of `asks.jsonl`
    (line n holds seq n) that has none."""
    ierr = stopped_error(reason).model_dump(mode="json")
    pending = next(results, None)
    with asks.open("rb") as lines:
        for seq, line in enumerate(lines):
            if pending is not None and pending[0] == seq:
                yield pending
                pending = next(results, None)
            else:
                yield seq, False, _unrun_record(json.loads(line)["record"], ierr)
    while pending is not None:
        yield pending
        pending = next(results, None)


def _unrun_record(record: dict[str, Any], ierr: dict[str, Any]) -> bytes:
    record["iErr"] = ierr
    return json.dumps(record, ensure_ascii=False).encode()
