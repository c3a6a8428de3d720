"""The dead-letter → failed rule: what a dead-lettered message of a batch still owes it.

A dead-lettered ask/result still gets its (failed) line and a dead-lettered
download job a failed row; without them the batch would wait forever for
what never comes.
"""

from __future__ import annotations

from typing import Any

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages import DeadLetter, DownloadResult, Record, ResultMessage

#: iErr code of a record whose message was dead-lettered (it could never be handled).
DEAD_LETTERED = int(IErrCode.DEAD_LETTERED)


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
