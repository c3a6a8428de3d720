"""Start-up scans of files the sink appends to: repair a torn last line, list keys.

Only ids (strings) are kept from a scan, never whole records, so memory stays
proportional to the number of records, not to their size.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt4batch.common.logging import get_logger

log = get_logger("gpt4batch.sink")

_CHUNK = 1 << 20


def repair_tail(path: Path) -> int:
    """Cut a last line that has no newline (a crash mid-write); returns the bytes removed.

    Its message was never FINished, so NSQ redelivers it and it is written again.
    """
    if not path.exists():
        return 0
    with path.open("rb+") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end > 0:
            start = max(0, end - _CHUNK)
            fh.seek(start)
            chunk = fh.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                end = start + cut + 1
                break
            end = start
        removed = size - end
        if removed:
            fh.truncate(end)
            fh.flush()
            os.fsync(fh.fileno())
            log.warning("cut a partial last line", path=str(path), bytes=removed)
    return removed


def iter_lines(path: Path) -> Iterator[bytes]:
    """Non-empty lines of `path` (none when it does not exist)."""
    if not path.exists():
        return
    with path.open("rb") as fh:
        for line in fh:
            if line.strip():
                yield line


def json_object(line: bytes) -> dict[str, Any]:
    """`line` as a JSON object, or an empty dict when it is not one."""
    try:
        obj = json.loads(line)
    except ValueError:
        return {}
    return obj if isinstance(obj, dict) else {}
