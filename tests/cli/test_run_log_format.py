"""`run --log-format`: JSON lines off a terminal by default, text when asked, one format."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "7") as server:
        yield server


def _log_lines(stderr: str) -> list[str]:
    """The log lines: the record lines of --progress log (not the banner or summary)."""
    return [line for line in stderr.splitlines() if "record" in line and "seq" in line]


def test_json_is_the_default_off_a_terminal(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))
    assert r.returncode == 0, r.stderr[-1500:]
    lines = _log_lines(r.stderr)
    assert len(lines) == 2
    assert all(json.loads(line)["event"] == "record" for line in lines)


def test_text_when_asked(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    r = run_cmd(tmp_path, "-i", "in.jsonl", "--log-format", "text", *upstream(mock))
    assert r.returncode == 0, r.stderr[-1500:]
    lines = _log_lines(r.stderr)
    assert len(lines) == 2
    assert not any(line.lstrip().startswith("{") for line in lines)
    assert all("[info     ] record" in line for line in lines)


def test_the_simulators_lines_are_json_lines_too(tmp_path: Path) -> None:
    """Its warnings went through Python's bare last-resort handler (plain text)."""
    import httpx

    with MockUpstream(
        "--fault-hang", "1", "--hang-seconds", "0.1", stderr=subprocess.PIPE
    ) as hanging:
        r = httpx.post(
            f"{hanging.url}/standard/all-tools",
            headers=hanging.headers,
            json={"action": "next", "model": "gpt-4", "messages": []},
            timeout=30,
        )
        assert r.status_code == 504
    assert hanging.proc is not None and hanging.proc.stderr is not None
    lines = hanging.proc.stderr.read().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    assert {"event": "answered 504", "logger": "mock_upstream"}.items() <= events[0].items()
