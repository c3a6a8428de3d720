"""What `gpt4batch run` reports: the errors file and the per-code breakdown, the resume
hint only when a resume can help, side files of this batch only, call-level progress,
per-run counts and one file-mode rule."""

from __future__ import annotations

import asyncio
import io
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt4batch.cli.run.command import Run
from gpt4batch.cli.run.errors_file import write_errors
from gpt4batch.cli.run.options import parse
from gpt4batch.cli.run.progress import RunProgress
from gpt4batch.common.usage import UsageTotals
from gpt4batch.services.caller.call_stats import CallStats
from gpt4batch.services.sink.ledger import LedgerCounts
from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "7") as server:
        yield server


def _bad_line(folder: Path, name: str = "in.jsonl") -> None:
    with (folder / name).open("a") as fh:
        fh.write('{"id": "bad", "asks": [{"id": "a", "content": "x", "images": ["none.png"]}]}\n')


def test_errors_file_and_breakdown_and_no_resume_for_input_errors(
    mock: MockUpstream, tmp_path: Path
) -> None:
    write_input(tmp_path, 5, asks=1)
    _bad_line(tmp_path)
    r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))
    assert r.returncode == 1
    rows = read_jsonl(tmp_path / "out.errors.jsonl")
    assert rows == [
        {"line": 6, "id": "bad", "error": {"code": 422, "message": rows[0]["error"]["message"]}}
    ]
    assert "none.png" in rows[0]["error"]["message"]
    assert "422  1 record: rejected by ingest" in r.stderr
    assert "  resume    " not in r.stderr  # a resume cannot mend an input error


def test_retryable_failures_get_the_resume_hint(tmp_path: Path) -> None:
    write_input(tmp_path, 30, asks=1)
    with MockUpstream("--seed", "4", "--fault-5xx", "0.5") as flaky:
        r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(flaky, "--retries", "0"))
    assert r.returncode == 1
    codes = {row["error"]["code"] for row in read_jsonl(tmp_path / "out.errors.jsonl")}
    assert codes and all(500 <= c < 600 for c in codes)
    assert "resume    gpt4batch run -i out.jsonl -f" in r.stderr
    failed = sum(1 for rec in read_jsonl(tmp_path / "out.jsonl") if rec["iErr"])
    assert len(read_jsonl(tmp_path / "out.errors.jsonl")) == failed


def test_side_files_belong_to_one_batch(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 3, asks=1, name="first.jsonl")
    _bad_line(tmp_path, "first.jsonl")
    r1 = run_cmd(tmp_path, "-i", "first.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert r1.returncode == 1 and (tmp_path / "out.rejects.jsonl").exists()
    write_input(tmp_path, 3, asks=1, name="second.jsonl")
    r2 = run_cmd(tmp_path, "-i", "second.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert r2.returncode == 0, r2.stderr[-1500:]
    assert "rejects" not in r2.stderr.split("gpt4batch run: finished")[-1]
    assert not (tmp_path / "out.rejects.jsonl").exists()
    assert not (tmp_path / "out.errors.jsonl").exists()
    assert len(list(tmp_path.glob("out.rejects.jsonl.*.old"))) == 1  # kept, aside


def test_output_and_side_files_follow_the_umask(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    _bad_line(tmp_path)
    old = os.umask(0o027)
    try:
        r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))
    finally:
        os.umask(old)
    assert r.returncode == 1
    for name in ("out.jsonl", "out.rejects.jsonl", "out.errors.jsonl"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o640, name


def test_errors_file_streams_and_skips_successes(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    lines = [
        b'{"id":"a","answers":[{"x":"\\"iErr\\":{}"}],"iErr":null}',
        b'{"id":"b","answers":null,"iErr":{"code":429,"message":"slow down"}}',
        b'{"id":"c","answers":null,"iErr":{"code":499,"message":"not run"}}',
    ]
    out.write_bytes(b"\n".join(lines) + b"\n")
    breakdown = write_errors(out)
    assert dict(breakdown.by_code) == {429: 1, 499: 1} and breakdown.resumable == 2
    assert [row["line"] for row in read_jsonl(tmp_path / "out.errors.jsonl")] == [2, 3]
    out.write_bytes(lines[0] + b"\n")
    assert write_errors(out).total == 0
    assert not (tmp_path / "out.errors.jsonl").exists()


def test_progress_shows_calls_and_429s_before_any_record_is_done() -> None:
    calls = CallStats(started=0.0)
    calls.conversation(4)
    calls.calls, calls.rate_limited, calls.asks_answered = 10, 2, 2
    stream = io.StringIO()
    progress = RunProgress("bar", LedgerCounts(), stream=stream, calls=calls)
    progress.total = 100
    line = progress.line(now=5.0)
    assert "0/100" in line and "calls 10 (2.0/s)" in line and "429s 2" in line
    # 400 asks to answer, 2 answered in 5 s (0.4/s): ~995 s left, known before any record.
    assert "ETA 16:3" in line
    assert "$" not in line  # nothing priced: no spend shown
    spent = UsageTotals(records=1, prompt_tokens=10, cost_usd=1.25)
    priced = RunProgress("bar", LedgerCounts(), stream=stream, calls=calls, usage=spent)
    assert "429s 2  $1.2500  ETA" in priced.line(now=5.0)


def test_counts_are_per_run_not_per_process(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 3, asks=2)
    argv = ["-i", str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl")]

    async def one(out: str) -> int:
        run = Run(parse([*argv[:2], "-o", str(tmp_path / out), *upstream(mock)]))
        result = await run.execute()
        return int(result.calls)

    assert asyncio.run(one("a.jsonl")) == 6
    assert asyncio.run(one("b.jsonl")) == 6  # not 12: the second run counts its own calls
    assert json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])["iErr"] is None
