"""A batch's ledger entries in seq (= input) order, in bounded memory.

The journal is sorted by seq in chunks (each sorted in memory, spilled to a
temporary file) and the chunks are merged. Of several entries for one seq the
first success wins (a failure is replaced by a later success), else the first.
Used by the sink to write a completed batch's output (`write_output`), by
`gpt4batch run`'s finalizer, which walks it beside the input, and by the
gateway's output file: one sort, one policy for its memory.
"""

from __future__ import annotations

import heapq
import os
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from gpt4batch.services.sink.index import iter_lines
from gpt4batch.services.sink.ledger.files import atomic_output
from gpt4batch.services.sink.ledger.journal import parse_entry

#: Journal bytes sorted in memory at once before spilling a sorted run to disk (as entry
#: tuples about 1.4x that): 4 MiB keeps the sort's peak near 6 MB (16 MiB took ~23 MB, the
#: largest part of `run`'s growth; 64 MiB ~90 MB). Past MAX_RUNS x 4 MiB of journal (~1 GB,
#: about a million one-ask records) the chunks grow instead, so at most MAX_RUNS files are
#: open and merged at once, in one pass.
SORT_CHUNK_BYTES = 4 * 1024 * 1024
MAX_RUNS = 256

Entry = tuple[int, bool, bytes]  # seq, ok, record JSON


def sort_chunk_bytes(journal_bytes: int) -> int:
    """The in-memory sort chunk for a journal of `journal_bytes`."""
    return max(SORT_CHUNK_BYTES, -(-journal_bytes // MAX_RUNS))


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
    """Journal entries in seq order, one per seq (the first success, else the first);
    `chunk_bytes` defaults to `sort_chunk_bytes` of the journal's size."""
    if chunk_bytes is None:
        chunk_bytes = sort_chunk_bytes(journal.stat().st_size if journal.exists() else 0)
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


def write_output(journal: Path, out: Path) -> int:
    """The journal's records, one line per seq in seq order, to `out` (atomically)."""
    written = 0
    with atomic_output(out) as fh:
        for _, _, record in sorted_results(journal, out.parent):
            fh.write(record + b"\n")
            written += 1
    return written
