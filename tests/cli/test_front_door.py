"""The front door of `gpt4batch run`: a user's mistake is one line and exit 2, never a
traceback; a refused token stops the run before it pays for more."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "3") as server:
        yield server


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mistakes(folder: Path, mock: MockUpstream) -> list[tuple[str, list[str], str]]:
    """(name, argv, what the one line must say) for common mistakes."""
    (folder / "a-dir").mkdir(exist_ok=True)
    (folder / "a-file").write_text("x")
    dead = f"127.0.0.1:{_dead_port()}"
    # The token from a file: on the command line it adds a warning line (seen by `ps`).
    (folder / "token").write_text(mock.token)
    (folder / "t-token").write_text("t")
    ok = ["--base-url", mock.url, "--access-token-file", str(folder / "token"), "-q", "0"]
    t_token = ["--access-token-file", str(folder / "t-token")]
    return [
        ("missing input", [*ok, "-i", "nope.jsonl"], "no such input file"),
        ("input is a directory", [*ok, "-i", "a-dir"], "is a directory"),
        ("default input missing", ok, "example.jsonl"),
        ("output in /proc", [*ok, "-i", "in.jsonl", "-o", "/proc/out.jsonl"], "cannot create"),
        ("output under a file", [*ok, "-i", "in.jsonl", "-o", "a-file/out.jsonl"], "a file"),
        ("output is a directory", [*ok, "-i", "in.jsonl", "-o", "a-dir"], "is a directory"),
        ("output with slash", [*ok, "-i", "in.jsonl", "-o", "new-dir/"], "is a directory"),
        ("output is the input", [*ok, "-i", "in.jsonl", "-o", "in.jsonl"], "must differ"),
        ("download dir a file", [*ok, "-i", "in.jsonl", "-d", "a-file"], "not a folder"),
        ("nsqd unreachable", [*ok, "-i", "in.jsonl", "-n", "--nsqd-tcp-address", dead], dead),
        (
            "lookupd unreachable",
            [*ok, "-i", "in.jsonl", "-n", "--lookupd-http-address", dead],
            dead,
        ),
        ("-n without address", [*ok, "-i", "in.jsonl", "-n"], "needs --nsqd-tcp-address"),
        ("bad nsq address", [*ok, "-i", "in.jsonl", "-n", "--nsqd-tcp-address", "nohost"], ""),
        ("goroutine zero", [*ok, "-i", "in.jsonl", "-g", "0"], "at least 1"),
        ("goroutine not a number", [*ok, "-i", "in.jsonl", "-g", "many"], "invalid int"),
        ("negative qps", [*ok, "-i", "in.jsonl", "-q", "-1"], "qps"),
        ("bad bool", [*ok, "-i", "in.jsonl", "-f=maybe"], "true or false"),
        ("unknown flag", [*ok, "-i", "in.jsonl", "--frobnicate"], "--frobnicate"),
        ("bad upstream kind", [*ok, "-i", "in.jsonl", "--upstream", "bard"], "bard"),
        (
            "no token",
            ["-i", "in.jsonl", "--base-url", mock.url, "--credentials", "none.pub"],
            "no access token",
        ),
        (
            "unreadable credentials",
            ["-i", "in.jsonl", "--base-url", mock.url, "--credentials", "a-dir"],
            "credentials",
        ),
        ("flag missing its value", [*ok, "-i", "in.jsonl", "-o"], "expected one argument"),
        (
            "upstream refuses connections",
            ["-i", "in.jsonl", "--base-url", f"http://{dead}", *t_token],
            f"the upstream at http://{dead} does not answer (connection refused)",
        ),
        (
            "upstream host unknown",
            ["-i", "in.jsonl", "--base-url", "http://no-such-host.invalid", *t_token],
            "(cannot resolve the host no-such-host.invalid)",
        ),
        ("allowed dir missing", [*ok, "-i", "in.jsonl", "--allowed-dirs", "nope"], "nope does not"),
    ]


def test_every_user_mistake_is_one_line_and_exit_2(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    before = mock.stats()["total_calls"]
    failures = []
    cases = mistakes(tmp_path, mock)
    assert len(cases) >= 20
    for name, argv, says in cases:
        r = run_cmd(tmp_path, *argv, env={"GPT4BATCH_ACCESS_TOKEN": ""}, timeout=60)
        errors = [line for line in r.stderr.splitlines() if "error:" in line]
        problems = []
        if r.returncode != 2:
            problems.append(f"exit {r.returncode}")
        if "Traceback" in r.stderr:
            problems.append("traceback")
        if len(errors) != 1 or says not in errors[0]:
            problems.append(f"error lines {errors!r}")
        if "usage:" in r.stderr:
            problems.append("usage block")
        if len(r.stderr.splitlines()) > 3:
            problems.append(f"{len(r.stderr.splitlines())} lines")
        if problems:
            failures.append(f"{name}: {', '.join(problems)}\n{r.stderr[-800:]}")
    assert not failures, "\n".join(failures)
    assert mock.stats()["total_calls"] == before  # nothing was paid for
    assert not (tmp_path / "out.jsonl").exists()
    assert not (tmp_path / "new-dir").exists() or not any((tmp_path / "new-dir").iterdir())


def test_first_line_says_which_input_and_output(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 1, asks=1, name="example.jsonl")
    r = run_cmd(tmp_path, *upstream(mock))
    assert r.returncode == 0, r.stderr[-1000:]
    first = r.stderr.splitlines()[0]
    assert "input example.jsonl (default)" in first and "output out.jsonl (default)" in first
    r2 = run_cmd(tmp_path, "-i", "example.jsonl", "-o", "mine.jsonl", *upstream(mock))
    first = r2.stderr.splitlines()[0]
    assert "input example.jsonl ->" in first and "output mine.jsonl," in first


def test_usage_error_is_one_line_and_a_hint() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "run", "--nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.splitlines() == [
        "gpt4batch run: error: unrecognized arguments: --nope",
        "  (see `gpt4batch run --help`)",
    ]


def test_a_refused_token_stops_the_run_and_the_right_one_resumes_it(
    mock: MockUpstream, tmp_path: Path
) -> None:
    write_input(tmp_path, 40, asks=2)
    before = mock.stats()["total_calls"]
    flags = ["-i", "in.jsonl", "--base-url", mock.url, "-q", "0", "-g", "4"]
    r = run_cmd(tmp_path, *flags, "--access-token", "sk-wrong")
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert "refused the token from --access-token (401)" in last
    assert "Traceback" not in r.stderr and "sk-wrong" not in r.stderr
    # It stopped at the first refusals: at most one per conversation in flight.
    assert mock.stats()["total_calls"] - before <= 8
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 40
    assert {rec["iErr"]["code"] for rec in out} == {499}
    # The same command with the right token runs every record (none was journaled as done).
    r2 = run_cmd(tmp_path, *flags, "--access-token", mock.token)
    assert r2.returncode == 0, r2.stderr[-2000:]
    out = read_jsonl(tmp_path / "out.jsonl")
    assert len(out) == 40 and all(rec["iErr"] is None for rec in out)


def test_a_refused_token_costs_one_call_whatever_g(mock: MockUpstream, tmp_path: Path) -> None:
    """Issue 23: `run -g 60` with a refused token sent 60 calls (60 x 401)."""
    write_input(tmp_path, 200, asks=1)
    before = mock.stats()["unauthorized"]
    flags = ["-i", "in.jsonl", "--base-url", mock.url, "-q", "0", "-g", "60"]
    r = run_cmd(tmp_path, *flags, "--access-token", "sk-wrong")
    assert r.returncode == 2, r.stderr[-2000:]
    assert mock.stats()["unauthorized"] - before == 1
    assert {rec["iErr"]["code"] for rec in read_jsonl(tmp_path / "out.jsonl")} == {499}


def test_refusal_from_the_credentials_file_names_it(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 3, asks=1)
    creds = tmp_path / "creds.pub"
    creds.write_text(json.dumps({"access_token": "sk-old", "expired_at": "2099-01-01T00:00:00"}))
    r = run_cmd(
        tmp_path,
        *["-i", "in.jsonl", "--base-url", mock.url, "--credentials", str(creds)],
        env={"GPT4BATCH_ACCESS_TOKEN": ""},
    )
    assert r.returncode == 2
    assert f"refused the token from the credentials file {creds}" in r.stderr
    assert os.path.exists(tmp_path / "out.jsonl")


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
def test_openai_base_url_with_or_without_v1(
    mock: MockUpstream, tmp_path: Path, suffix: str
) -> None:
    """`--base-url http://host/v1` (the OpenAI SDKs' form) must not call /v1/v1/…."""
    write_input(tmp_path, 2, asks=2)
    before = mock.stats()["total_calls"]
    r = run_cmd(
        tmp_path,
        *["-i", "in.jsonl", "--upstream", "openai", "--base-url", mock.url + suffix],
        *["--access-token", mock.token, "-q", "0"],
    )
    assert r.returncode == 0, r.stderr[-1500:]
    assert all(rec["iErr"] is None for rec in read_jsonl(tmp_path / "out.jsonl"))
    assert mock.stats()["total_calls"] - before == 4


def test_run_flags_are_generated_from_the_caller_settings() -> None:
    from gpt4batch.cli.run.options import parse
    from gpt4batch.services.caller.settings import CallerSettings

    defaults = parse([])
    assert defaults.concurrency == CallerSettings.model_fields["concurrency"].default
    assert defaults.qps == CallerSettings.model_fields["qps"].default
    # A caller option with no original flag reaches run by itself, with the services' name.
    o = parse(["--temperature", "0.2", "--auth-retry-interval", "5", "--max-msg-size", "4096"])
    assert o.extra == {"temperature": 0.2, "auth_retry_interval": 5.0, "max_msg_size": 4096}
    # The services' names work as aliases of the original's.
    o = parse(["--input", "a.jsonl", "--output", "b.jsonl", "--chat-url", "http://h/c"])
    assert (o.input, o.out, o.chat_url) == ("a.jsonl", "b.jsonl", "http://h/c")


def test_an_upload_answered_503_is_reported_as_503(tmp_path: Path) -> None:
    """Issue 23: an upload answered 503 was reported as a timeout. The simulator answers
    503 before reading the file (as a proxy refusing at once does) and closes on the unread
    body, which reset the connection: the record said "connection closed" or "timed out"."""
    (tmp_path / "big.bin").write_bytes(os.urandom(3_000_000))
    (tmp_path / "small.bin").write_bytes(os.urandom(1000))
    lines = [
        {"id": f"r{i}", "asks": [{"id": "a", "content": "what is it", "files": [name]}]}
        for i, name in enumerate(["big.bin", "small.bin"] * 3)
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    with MockUpstream("--fault-5xx", "1") as failing:
        r = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(failing, "--retries", "0"))
    assert r.returncode == 1, r.stderr[-2000:]
    errors = [record["iErr"] for record in read_jsonl(tmp_path / "out.jsonl")]
    assert [e["code"] for e in errors] == [503] * 6, errors
    for error in errors:
        assert "upload: HTTP 503" in error["message"] and "service unavailable" in error["message"]
        assert "timed out" not in error["message"]
