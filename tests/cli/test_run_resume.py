"""`gpt4batch run` resumes: `-f` on an output ends like any run, the printed resume
command works when pasted, and a finished output of another input is never lost."""

from __future__ import annotations

import json
import os
import shlex
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


def test_a_finished_output_of_another_input_is_moved_aside(
    mock: MockUpstream, tmp_path: Path
) -> None:
    """Issue 23: the paid results in `-o` were overwritten by a run of another input."""
    for name, n in (("first.jsonl", 3), ("second.jsonl", 2)):
        lines = [{"id": f"{name[0]}{i}", "asks": [{"id": "a", "content": "hi"}]} for i in range(n)]
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in lines))
    r1 = run_cmd(tmp_path, "-i", "first.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert r1.returncode == 0, r1.stderr[-2000:]
    first = (tmp_path / "out.jsonl").read_bytes()
    r2 = run_cmd(tmp_path, "-i", "second.jsonl", "-o", "out.jsonl", *upstream(mock))
    assert r2.returncode == 0, r2.stderr[-2000:]
    [aside] = tmp_path.glob("out.jsonl.*.old")
    assert aside.read_bytes() == first  # the first batch's paid answers, kept whole
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == ["s0", "s1"]
    assert f"out.jsonl held an earlier run's output; kept as {aside.name}" in r2.stderr


def resume_words(stderr: str) -> list[str]:
    [line] = [ln for ln in stderr.splitlines() if ln.startswith("  resume    ")]
    return shlex.split(line.removeprefix("  resume    "))


def test_the_printed_resume_command_works_when_pasted(mock: MockUpstream, tmp_path: Path) -> None:
    """Issue 23: one resume story, pasteable: a refused token points to the resume command,
    which repeats how the token was given (here --credentials FILE), never the token."""
    write_drawings(tmp_path, 6)
    creds = tmp_path / "creds.pub"
    creds.write_text(json.dumps({"access_token": "sk-old", "expired_at": "2099-01-01T00:00:00"}))
    env = {"GPT4BATCH_ACCESS_TOKEN": ""}
    flags = ["--base-url", mock.url, "--credentials", str(creds), "-q", "0", "-g", "3"]
    first = run_cmd(tmp_path, "-i", "in.jsonl", "-e", "false", *flags, env=env)
    assert first.returncode == 2, first.stderr[-2000:]
    assert first.stderr.strip().splitlines()[-1].endswith("then run the resume command above")
    words = resume_words(first.stderr)
    assert words[:7] == ["gpt4batch", "run", "-i", "out.jsonl", "-f", "-o", "out.fix.jsonl"]
    assert ["--credentials", str(creds)] == words[words.index("--credentials") :][:2]
    assert "-e=false" in words and "sk-old" not in first.stderr
    assert f"(the token comes from the credentials file {creds}, as in this run)" in first.stderr
    creds.write_text(json.dumps({"access_token": mock.token, "expired_at": "2099-01-01T00:00:00"}))
    pasted = run_cmd(tmp_path, *words[2:], env=env)
    assert pasted.returncode == 1, pasted.stderr[-2000:]  # only the 4 bad lines fail
    assert "6 ok, 4 failed, 0 not run" in pasted.stderr
    fixed = read_jsonl(tmp_path / "out.fix.jsonl")
    assert [r["id"] for r in fixed[:6]] == [f"r{i}" for i in range(6)]
    assert not any(name.startswith("GPT4API") for name in os.listdir(tmp_path))  # -e=false kept


def test_a_token_given_on_the_command_line_is_named_not_repeated(tmp_path: Path) -> None:
    write_drawings(tmp_path, 2)
    with MockUpstream("--fault-5xx", "1") as failing:
        r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(failing, "--retries", "0"))
    assert r.returncode == 1
    assert "--retries 0" in r.stderr
    words = resume_words(r.stderr)
    assert failing.token not in r.stderr and "--access-token" not in words
    assert "the token was given with --access-token, which is not repeated" in r.stderr
