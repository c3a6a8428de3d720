"""Side files belong to one batch: those of another batch are moved aside before a run.

`<out>.rejects.jsonl`, `.downloads.jsonl` and `.errors.jsonl` describe the
batch whose ledger (`<out>.journal.jsonl`) is beside them. A run of another
input with the same `-o`, or a fresh run after a finished one (its journal is
gone), starts them anew; the old ones are kept as `<name>.<unix time>.old`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from gpt4batch.common.filenames import sibling
from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.ledger import journal_batch

log = get_logger("gpt4batch.run")

SIDE_FILES = ("rejects.jsonl", "downloads.jsonl", "errors.jsonl")


def retire_side_files(out: Path, batch: str) -> list[Path]:
    """Move aside the side files of `out` unless they belong to `batch`'s journal."""
    if journal_batch(out) == batch:
        return []  # continuing this batch: its side files go on
    moved = []
    stamp = int(time.time())
    for suffix in SIDE_FILES:
        path = sibling(out, suffix)
        if path.exists():
            aside = path.with_name(f"{path.name}.{stamp}.old")
            os.replace(path, aside)
            moved.append(aside)
    if moved:
        log.info("side files of an earlier run moved aside", files=[str(p) for p in moved])
    return moved
