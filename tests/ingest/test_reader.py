"""Line streaming: numbering, blank lines, line endings, over-long lines, batch ids."""

from __future__ import annotations

import io
import os
from pathlib import Path

from gpt4batch.services.ingest.batch_id import default_batch_id
from gpt4batch.services.ingest.reader import RawLine, read_lines


def test_blank_lines_are_skipped_but_keep_physical_numbers() -> None:
    data = b'\xef\xbb\xbf{"a":1}\r\n\n   \n{"b":2}\n\t\n{"c":3}'

    got = list(read_lines(io.BytesIO(data), 100))

    assert got == [
        RawLine(1, b'{"a":1}', 12),
        RawLine(4, b'{"b":2}', 8),
        RawLine(6, b'{"c":3}', 7),
    ]


def test_over_long_line_is_skipped_without_keeping_it() -> None:
    long = b"x" * 5000
    data = b'{"a":1}\n' + long + b"\n" + b'{"b":2}\n'

    got = list(read_lines(io.BytesIO(data), 100))

    assert got == [RawLine(1, b'{"a":1}', 8), RawLine(2, None, 5001), RawLine(3, b'{"b":2}', 8)]


def test_line_exactly_at_the_limit_is_kept() -> None:
    got = list(read_lines(io.BytesIO(b"y" * 10 + b"\n" + b"z" * 11), 10))

    assert got == [RawLine(1, b"y" * 10, 11), RawLine(2, None, 11)]


def test_default_batch_id_is_stable_per_file_version(tmp_path: Path) -> None:
    f = tmp_path / "my batch!.jsonl"
    f.write_text("{}\n")

    first, again = default_batch_id(f), default_batch_id(f)
    os.utime(f, ns=(0, 10**9))
    changed = default_batch_id(f)

    assert first == again
    assert first.startswith("my_batch-") and len(first) == len("my_batch-") + 8
    assert changed != first
    assert default_batch_id(None).startswith("stdin-")
