"""The dead-letter → failed rule: what a dead-lettered message of a batch still owes it.

A dead-lettered ask/result still gets its (failed) line and a dead-lettered
download job a failed row; without them the batch would wait forever for
what never comes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages import DeadLetter, DownloadResult, Record, ResultMessage

#: iErr code of a record whose message was dead-lettered (it could never be handled).
DEAD_LETTERED = int(IErrCode.DEAD_LETTERED)
_BATCH = re.compile(r'"batch":("(?:[^"\\]|\\.)*")')
_SEQ = re.compile(r'"seq":(\d+)')


def dead_letter_body(letter: DeadLetter) -> dict[str, Any] | None:
    """The dead message's body as a dict; from a truncated body, at least batch and seq.

    None for the letter of a refused (unauthenticated) message: a forgery's letter must
    not turn its record into a failed line (the real answer is still to come).
    """
    if letter.unauthenticated:
        return None
    text = letter.body or ""
    try:
        body = json.loads(text)
    except (ValueError, RecursionError):
        batch, seq = _BATCH.search(text), _SEQ.search(text)
        if batch is None or seq is None:
            return None
        return {"batch": json.loads(batch.group(1)), "seq": int(seq.group(1))}
    return body if isinstance(body, dict) and isinstance(body.get("batch"), str) else None


def failed_download(batch: str, letter: DeadLetter, body: dict[str, Any]) -> DownloadResult | None:
    """The failed row of a dead-lettered download job (None: `body` is not one)."""
    if "url" not in body or not isinstance(body.get("local"), str):
        return None
    return DownloadResult(
        batch=batch,
        record_id=str(body.get("record_id", "")),
        ask_id=str(body.get("ask_id", "")),
        url=str(body["url"]),
        local=body["local"],
        ok=False,
        error=f"dead-lettered: {letter.reason}"[:2000],
    )


def failed_result(batch: str, letter: DeadLetter, body: dict[str, Any]) -> ResultMessage | None:
    """The failed result of a dead-lettered ask/result (None: it names no seq)."""
    seq, record = body.get("seq"), body.get("record")
    if not isinstance(seq, int) or seq < 0:
        return None
    ierr = {"code": DEAD_LETTERED, "message": f"dead-lettered: {letter.reason}"[:2000]}
    try:
        if not isinstance(record, dict):
            raise ValueError("no record")
        model = Record.model_validate({**record, "iErr": ierr})
    except ValueError:
        rid = record.get("id") if isinstance(record, dict) else body.get("record_id")
        model = Record(id=rid if isinstance(rid, str) else f"seq:{seq}", asks=[], iErr=ierr)
    return ResultMessage(batch=batch, seq=seq, record=model)
