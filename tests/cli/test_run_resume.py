"""`gpt4batch run` resumes: `-f` on an output ends like any run, the printed resume
command works when pasted, and a finished output of another input is never lost."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run import run_cmd, upstream
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "7") as server:
        yield server


def write_drawings(folder: Path, n: int, name: str = "in.jsonl") -> Path:
    """`n` records whose answers are pictures (downloads planned), then 4 bad lines."""
    path = folder / name
    lines = [
        json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": f"please draw {i}"}]})
        for i in range(n)
    ]
    lines += [
        "not json",
        '{"id": "x1"}',
        '{"id": "x2", "asks": []}',
        '{"id": "x3", "asks": [{"id": "a", "content": "c", "images": ["missing.png"]}]}',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def test_fix_run_with_nothing_left_to_call_exits(mock: MockUpstream, tmp_path: Path) -> None:
    """Issue 19 item 2: records passed through by -f carry the first run's downloads;
    the run waited forever for them (a hang fails through the subprocess timeout)."""
    write_drawings(tmp_path, 40)
    first = run_cmd(tmp_path, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert first.returncode == 1, first.stderr[-2000:]  # the 4 bad lines
    assert "40 ok, 4 failed" in first.stderr
    calls = mock.stats()["total_calls"]
    for download in ("true", "false"):
        again = run_cmd(
            tmp_path,
            *("-i", "out.jsonl", "-f", "-o", f"out.fix-{download}.jsonl", "-e", download),
            *upstream(mock),
            timeout=60,
        )
        assert again.returncode == 1, again.stderr[-2000:]
        assert "40 ok, 4 failed, 0 not run" in again.stderr
        fixed = read_jsonl(tmp_path / f"out.fix-{download}.jsonl")
        assert fixed[:40] == read_jsonl(tmp_path / "out.jsonl")[:40]
    assert mock.stats()["total_calls"] == calls  # nothing was called again
