"""Stream the non-blank lines of a JSONL input with their line numbers, in constant memory.

A line longer than the limit is never held whole: its content is skipped up
to the next newline and it comes out with `data=None`, so one huge line can
neither exhaust memory nor stop the batch.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

STDIN = "-"
_BOM = b"\xef\xbb\xbf"
_SKIP_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class RawLine:
    """One non-blank input line."""

    number: int
    """1-based physical line number (blank lines count here, so editors agree)."""
    data: bytes | None
    """The line without its line ending; None when it was over the size limit."""
    size: int
    """Bytes of the line, line ending included."""


@dataclass(frozen=True, slots=True)
class InputSource:
    """Where the lines come from, as reported in rejects and the manifest."""

    stream: BinaryIO
    name: str
    """Absolute path of the file, or "<stdin>"."""
    base_dir: Path
    """Folder relative image/file paths resolve against (cwd for stdin)."""
    path: Path | None
    """The file, None for stdin."""


def read_lines(stream: BinaryIO, max_line_bytes: int) -> Iterator[RawLine]:
    """Yield each non-blank line; blank (whitespace-only) lines are skipped, not counted."""
    number = 0
    readline = stream.readline
    while True:
        chunk = readline(max_line_bytes + 1)
        if not chunk:
            return
        number += 1
        if len(chunk) > max_line_bytes and not chunk.endswith(b"\n"):
            yield RawLine(number, None, len(chunk) + _skip_to_newline(stream))
            continue
        data = chunk.rstrip(b"\r\n")
        if number == 1 and data.startswith(_BOM):
            data = data[len(_BOM) :]
        if data.strip():
            yield RawLine(number, data, len(chunk))


def _skip_to_newline(stream: BinaryIO) -> int:
    """Discard the rest of an over-long line; returns how many bytes were skipped."""
    skipped = 0
    while True:
        chunk = stream.readline(_SKIP_CHUNK)
        skipped += len(chunk)
        if not chunk or chunk.endswith(b"\n"):
            return skipped


@contextmanager
def open_input(path: str) -> Iterator[InputSource]:
    """Open a file (or stdin for "-") for binary line reading with a large buffer."""
    if path == STDIN:
        yield InputSource(sys.stdin.buffer, "<stdin>", Path.cwd(), None)
        return
    resolved = Path(path).resolve()
    with resolved.open("rb", buffering=1 << 20) as stream:
        yield InputSource(stream, str(resolved), resolved.parent, resolved)


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes (the manifest keeps it: reconcile checks the input is the same)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
