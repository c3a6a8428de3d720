"""A batch's ledger entries in seq (= input) order, in bounded memory.

The journal is sorted by seq in chunks (each sorted in memory, spilled to a
temporary file) and the chunks are merged. Of several entries for one seq the
first success wins (a failure is replaced by a later success), else the first.
Used by the sink to write a completed batch's output and by `gpt4batch run`'s
finalizer, which walks it beside the input.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpt4batch.common.filenames import file_mode
from gpt4batch.services.sink.index import iter_lines
from gpt4batch.services.sink.ledger import parse_entry

#: Journal bytes sorted in memory at once before spilling a sorted run to disk. As
#: entry tuples they take about 1.4× their bytes: 16 MiB keeps the finalizer's peak
#: near 25 MB (64 MiB took ~90 MB, most of `run`'s 100-MB budget); a million
#: one-ask records make ~16 runs, merged in one pass.
CHUNK_BYTES = 16 * 1024 * 1024

Entry = tuple[int, bool, bytes]  # seq, ok, record JSON


def _spill(entries: list[Entry], folder: Path) -> Path:
    entries.sort(key=lambda e: e[0])
    fd, name = tempfile.mkstemp(dir=folder, suffix=".run")
    with os.fdopen(fd, "wb") as fh:
        for seq, ok, record in entries:
            fh.write(b"%d\t%d\t%s\n" % (seq, ok, record))
    return Path(name)


def _read_run(path: Path) -> Iterator[Entry]:
    with path.open("rb") as fh:
        for line in fh:
            seq, ok, record = line.rstrip(b"\n").split(b"\t", 2)
            yield int(seq), ok == b"1", record


def sorted_results(journal: Path, folder: Path, chunk_bytes: int | None = None) -> Iterator[Entry]:
    """Journal entries in seq order, one per seq (the first success, else the first)."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    runs: list[Path] = []
    buffer: list[Entry] = []
    buffered = 0
    try:
        for line in iter_lines(journal):
            entry = parse_entry(line)
            if entry is None:
                continue
            buffer.append((entry.seq, entry.ok, entry.record))
            buffered += len(line)
            if buffered >= chunk_bytes:
                runs.append(_spill(buffer, folder))
                buffer, buffered = [], 0
        buffer.sort(key=lambda e: e[0])
        streams: list[Iterable[Entry]] = [_read_run(p) for p in runs]
        streams.append(iter(buffer))
        chosen: Entry | None = None
        for merged in heapq.merge(*streams, key=lambda e: e[0]):
            if chosen is not None and merged[0] == chosen[0]:
                if merged[1] and not chosen[1]:
                    chosen = merged
                continue
            if chosen is not None:
                yield chosen
            chosen = merged
        if chosen is not None:
            yield chosen
    finally:
        for path in runs:
            path.unlink(missing_ok=True)


def write_in_order(journal: Path, out: Path) -> int:
    """The journal's records, one line per seq in seq order, to `out` (atomically)."""
    written = 0
    with atomic_output(out) as fh:
        for _, _, record in sorted_results(journal, out.parent):
            fh.write(record + b"\n")
            written += 1
    return written


class atomic_output:
    """`with atomic_output(path) as fh`: a temp file, fsynced and renamed over `path` on
    success (the folder fsynced too), removed on failure."""

    def __init__(self, out: Path) -> None:
        self.out = out
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
        os.fchmod(fd, file_mode())  # mkstemp makes 0600; the output follows the umask rule
        self.tmp = Path(name)
        self.fh = os.fdopen(fd, "wb", buffering=1 << 20)

    def __enter__(self):  # type: ignore[no-untyped-def]
        return self.fh

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        try:
            if exc_type is None:
                self.fh.flush()
                os.fsync(self.fh.fileno())
            self.fh.close()
            if exc_type is not None:
                return
            os.replace(self.tmp, self.out)
            fd = os.open(self.out.parent, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            self.tmp.unlink(missing_ok=True)
