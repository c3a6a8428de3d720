"""`<out>.errors.jsonl`: the failed records of a run, one line each, and counts per code.

Like the OpenAI Batch API's error file: a user sees what failed without
scanning the whole output. Each line is

    {"line": 12, "id": "r12", "error": {"code": 429, "message": "ask a1: ..."},
     "usage": {"prompt_tokens": 40, ..., "cost_usd": 0.0004}}

(`usage`: what the record's answered calls cost before it failed, as on its output line;
the breakdown sums it, so a failed batch says what its failures cost.)

(`line` counts the input's non-blank lines from 1). The file is written after
the output, streaming it (bounded memory): a line holding `"iErr":null` is a
success and is not even parsed.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.filenames import file_mode, sibling
from gpt4batch.common.usage import UsageTotals, read_usage
from gpt4batch.services.sink.index import iter_lines

#: Failures a resume (`-f`) cannot mend: the input, a local file, the setup, or a request
#: the upstream refuses as such. Every other failure may succeed when run again.
NOT_RESUMABLE = frozenset(
    {
        400,
        404,
        413,
        IErrCode.REJECTED,
        IErrCode.LOCAL_FILE,
        IErrCode.FORBIDDEN_PATH,
        IErrCode.UNSUPPORTED_FILE,
        IErrCode.FILE_TOO_LARGE,
        IErrCode.UNTRUSTED_HOST,
    }
)

_OK = b'"iErr":null'


def worth_resuming(code: int) -> bool:
    return code not in NOT_RESUMABLE


@dataclass
class ErrorBreakdown:
    path: Path
    by_code: Counter[int] = field(default_factory=Counter)
    example: dict[int, str] = field(default_factory=dict)
    usage: UsageTotals = field(default_factory=UsageTotals)
    """What the failed records' answered calls cost."""

    @property
    def total(self) -> int:
        return sum(self.by_code.values())

    @property
    def resumable(self) -> int:
        return sum(n for code, n in self.by_code.items() if worth_resuming(code))

    def lines(self) -> list[str]:
        """`  429  3 records  ask a1: too many requests` per code, most frequent first."""
        rows = []
        for code, n in self.by_code.most_common():
            note = "" if worth_resuming(code) else "  (a resume will not mend it)"
            rows.append(
                f"{code:>5}  {n:,} record{'s' if n != 1 else ''}: {self.example[code]}{note}"
            )
        return rows


def _failure(line: bytes) -> tuple[str, int, str, Any] | None:
    if _OK in line:
        return None
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    err = record.get("iErr") if isinstance(record, dict) else None
    if not isinstance(err, dict):
        return None
    code = err.get("code")
    code = code if isinstance(code, int) else IErrCode.INTERNAL
    return str(record.get("id", "")), code, str(err.get("message", "")), record.get("usage")


def write_errors(out: Path, lines: Iterable[bytes] | None = None) -> ErrorBreakdown:
    """Write `<out>.errors.jsonl` from the output (atomically); none when nothing failed."""
    target = sibling(out, "errors.jsonl")
    breakdown = ErrorBreakdown(target)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.fchmod(fd, file_mode())
    try:
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            for number, line in enumerate(lines if lines is not None else iter_lines(out), 1):
                failure = _failure(line)
                if failure is None:
                    continue
                record_id, code, message, usage = failure
                breakdown.by_code[code] += 1
                breakdown.example.setdefault(code, message[:120])
                row = {"line": number, "id": record_id, "error": {"code": code, "message": message}}
                paid = read_usage(usage)
                if paid is not None:
                    breakdown.usage.add(paid)
                    row["usage"] = usage
                fh.write(json.dumps(row, ensure_ascii=False).encode("utf-8", "replace") + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        if breakdown.total:
            os.replace(tmp_name, target)
        else:
            os.unlink(tmp_name)
            target.unlink(missing_ok=True)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return breakdown
