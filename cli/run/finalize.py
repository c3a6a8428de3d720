"""Write the final output in input order from the journal, in bounded memory.

The journal is sorted by seq in chunks (each sorted in memory, spilled to a
temporary file) and the chunks are merged; the merged stream is walked beside
the input, line by line. An input line without a result (the run was
stopped first) is written as the input record with an `iErr` saying so, so
that `gpt4batch run -i OUT -f -o OUT2` runs exactly what is missing.
"""

from __future__ import annotations

import heapq
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.cli.run.journal import parse_entry
from gpt4batch.common.errors import IErrCode
from gpt4batch.services.ingest.reader import RawLine
from gpt4batch.services.sink.index import iter_lines

#: Journal bytes sorted in memory at once before spilling a sorted run to disk.
CHUNK_BYTES = 64 * 1024 * 1024

#: iErr code of a record the run did not get to (client closed request, like nginx's 499).
NOT_RUN = int(IErrCode.NOT_RUN)
NOT_RUN_MESSAGE = "not run: the run was stopped before this record finished"


@dataclass
class FinalCounts:
    total: int = 0
    ok: int = 0
    failed: int = 0
    not_run: int = 0


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
    """Journal entries in seq order, the first occurrence of each seq only."""
    chunk_bytes = chunk_bytes or CHUNK_BYTES
    runs: list[Path] = []
    buffer: list[Entry] = []
    buffered = 0
    try:
        for line in iter_lines(journal):
            entry = parse_entry(line)
            if entry is None:
                continue
            buffer.append(entry)
            buffered += len(line)
            if buffered >= chunk_bytes:
                runs.append(_spill(buffer, folder))
                buffer, buffered = [], 0
        buffer.sort(key=lambda e: e[0])
        streams: list[Iterable[Entry]] = [_read_run(p) for p in runs]
        streams.append(iter(buffer))
        last = -1
        for entry in heapq.merge(*streams, key=lambda e: e[0]):
            if entry[0] != last:
                last = entry[0]
                yield entry
    finally:
        for path in runs:
            path.unlink(missing_ok=True)


def not_run_record(line: RawLine) -> bytes:
    """The input record of a line the run never finished, marked so `--fix` re-runs it."""
    ierr = {"code": NOT_RUN, "message": NOT_RUN_MESSAGE}
    try:
        obj = json.loads(line.data) if line.data is not None else None
    except (ValueError, RecursionError):
        obj = None
    if not isinstance(obj, dict):
        obj = {"id": f"line:{line.number}", "asks": [], "answers": None}
    obj["iErr"] = ierr
    try:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()
    except UnicodeEncodeError:  # a lone surrogate: escaped output is still the same JSON
        return json.dumps(obj, separators=(",", ":")).encode()


def write_final(input_lines: Iterable[RawLine], journal: Path, out: Path) -> FinalCounts:
    """Merge input and journal into `out` (atomically: temp file, fsync, rename)."""
    counts = FinalCounts()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        results = sorted_results(journal, out.parent) if journal.exists() else iter(())
        pending = next(results, None)
        with os.fdopen(fd, "wb", buffering=1 << 20) as fh:
            for seq, line in enumerate(input_lines):
                while pending is not None and pending[0] < seq:
                    pending = next(results, None)
                counts.total += 1
                if pending is not None and pending[0] == seq:
                    _, ok, record = pending
                    if ok:
                        counts.ok += 1
                    else:
                        counts.failed += 1
                else:
                    record = not_run_record(line)
                    counts.not_run += 1
                fh.write(record + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
        _fsync_dir(out.parent)  # the rename is durable before the journal may go
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
