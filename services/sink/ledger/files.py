"""A batch's ledger files beside its output, and the one atomic write of gpt4batch's files.

`atomic_output` (a temp file in the same folder, fsynced, renamed over the
target, the folder fsynced) writes every whole file: the output, the
manifest, the `.done` marker and the arrival-order output.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

from gpt4batch.common.filenames import file_mode, sibling
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.index import iter_lines, json_object


@dataclass(frozen=True)
class LedgerPaths:
    """The files of the batch whose output is `out` (all beside it)."""

    out: Path

    @property
    def journal(self) -> Path:
        return sibling(self.out, "journal.jsonl")

    @property
    def rejects(self) -> Path:
        return sibling(self.out, "rejects.jsonl")

    @property
    def downloads(self) -> Path:
        return sibling(self.out, "downloads.jsonl")

    @property
    def manifest(self) -> Path:
        return sibling(self.out, "manifest.json")

    @property
    def done(self) -> Path:
        return sibling(self.out, "done")


class atomic_output:
    """`with atomic_output(path) as fh`: a temp file, fsynced and renamed over `path` on
    success (the folder fsynced too), removed on failure."""

    def __init__(self, out: Path, fsync: Fsync = os.fsync) -> None:
        self.out = out
        self._fsync = fsync
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; the output follows the umask rule
        self.tmp = Path(name)
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)

    def __enter__(self) -> BinaryIO:
        return self.fh

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if exc_type is None:
                self.fh.flush()
                self._fsync(self.fh.fileno())
            self.fh.close()
            if exc_type is not None:
                return
            os.replace(self.tmp, self.out)
            fd = os.open(self.out.parent, os.O_RDONLY)
            try:
                self._fsync(fd)
            finally:
                os.close(fd)
        finally:
            self.tmp.unlink(missing_ok=True)


def write_atomically(path: Path, data: bytes, fsync: Fsync = os.fsync) -> None:
    """Write `path` whole through `atomic_output` (blocking)."""
    with atomic_output(path, fsync) as fh:
        fh.write(data)


def journal_batch(out: Path) -> str | None:
    """The batch whose ledger lives beside `out` (from its journal header), if any."""
    for line in iter_lines(LedgerPaths(out).journal):
        batch = json_object(line).get("batch")
        return batch if isinstance(batch, str) else None
    return None
