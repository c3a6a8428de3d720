"""An output and its side files belong to one batch: another batch's are moved aside.

`<out>`, `<out>.rejects.jsonl`, `.downloads.jsonl` and `.errors.jsonl` describe
the batch whose ledger (`<out>.journal.jsonl`) is beside them. A run of another
input with the same `-o`, or a fresh run after a finished one (its journal is
gone), starts them anew; the old ones (paid-for results among them) are kept as
`<name>.<unix time>.old`, never overwritten.
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


def retire_side_files(out: Path, batch: str) -> dict[Path, Path]:
    """Move aside `out` and its side files unless they belong to `batch`'s journal;
    {old name: new name} of each file moved."""
    if journal_batch(out) == batch:
        return {}  # continuing this batch: its output and side files go on
    moved = {}
    stamp = int(time.time())
    for path in (out, *(sibling(out, suffix) for suffix in SIDE_FILES)):
        if path.exists():
            aside = path.with_name(f"{path.name}.{stamp}.old")
            os.replace(path, aside)
            moved[path] = aside
    if moved:
        log.info("files of an earlier run moved aside", files=[str(p) for p in moved.values()])
    return moved
