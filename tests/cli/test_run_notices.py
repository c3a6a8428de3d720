"""What `gpt4batch run` tells a newcomer (issue 23): an empty input, `-q 0`, a line over
the message limit and `-n` without NSQ each get a line that says what to do."""

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
    with MockUpstream("--seed", "8") as server:
        yield server


def test_an_empty_input_warns_and_exits_0(mock: MockUpstream, tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text("\n  \n")
    r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "gpt4batch run: warning: in.jsonl holds no records (empty, or blank lines only)" in (
        r.stderr
    )


def test_q_0_is_announced_and_a_line_over_the_limit_names_the_flag(
    mock: MockUpstream, tmp_path: Path
) -> None:
    big = {"id": "big", "asks": [{"id": "a", "content": "x" * (1_200_000)}]}
    small = {"id": "small", "asks": [{"id": "a", "content": "hi"}]}
    (tmp_path / "in.jsonl").write_text(json.dumps(big) + "\n" + json.dumps(small) + "\n")
    r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))  # upstream() gives -q 0
    assert r.returncode == 1, r.stderr[-2000:]
    assert r.stderr.splitlines()[1].startswith("gpt4batch run: -q 0: no QPS limit")
    [reject] = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert "(raise --max-msg-size, and nsqd's --max-msg-size with it)" in reject["reason"]
    fitting = run_cmd(
        tmp_path, "-i", "in.jsonl", "-o", "out2.jsonl", "--max-msg-size", "4000000",
        *upstream(mock),
    )  # fmt: skip
    assert fitting.returncode == 0, fitting.stderr[-2000:]


def test_n_without_addresses_says_how_to_get_an_nsqd(tmp_path: Path) -> None:
    (tmp_path / "in.jsonl").write_text('{"id": "r", "asks": [{"id": "a", "content": "c"}]}\n')
    r = run_cmd(tmp_path, "-i", "in.jsonl", "-n")
    assert r.returncode == 2
    assert "`gpt4batch stack up` starts one on this machine (docs/deployment.md)" in r.stderr
    assert "Traceback" not in r.stderr
    # The flag it names is the one `run --help` shows (it named `--enable_nsq`, never listed).
    assert "-n/--enable-nsq needs --nsqd-tcp-address or --lookupd-http-address" in r.stderr
    shown = run_cmd(tmp_path, "--help")
    assert "-n, --enable-nsq" in shown.stdout and "--enable_nsq" not in shown.stdout


def test_the_first_progress_line_comes_with_the_first_call(tmp_path: Path) -> None:
    """Issue 23: the first `progress` line came 5 s after the start, so a run whose first
    answers take 3 s showed none before its first record. Order, not timing, is checked."""
    (tmp_path / "in.jsonl").write_text('{"id": "r", "asks": [{"id": "a", "content": "c"}]}\n')
    with MockUpstream("--latency-ms", "3000") as slow:
        r = run_cmd(tmp_path, "-i", "in.jsonl", "--progress", "log", *upstream(slow))
    assert r.returncode == 0, r.stderr[-2000:]
    events = [json.loads(ln)["event"] for ln in r.stderr.splitlines() if ln.startswith("{")]
    assert "progress" in events and events.index("progress") < events.index("record")
