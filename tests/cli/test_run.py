"""`gpt4batch run`: flags, ordering, exit codes, token sources, resume, signals."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gpt4batch.cli.run.options import normalize_argv, parse
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import count_lines, read_jsonl, wait_for

DATA = Path(__file__).resolve().parents[1] / "data"


# --- flags -------------------------------------------------------------------------


def test_defaults_are_the_originals() -> None:
    o = parse([])
    assert (o.input, o.out, o.concurrency, o.qps) == ("example.jsonl", "out.jsonl", 60, 1.0)
    assert (o.fix, o.history_and_training_disabled, o.enable_download) == (False, True, True)
    assert (o.download_prefix, o.rdb, o.rdb_interval, o.enable_nsq) == ("GPT4API", True, 60, False)
    assert o.model is None and o.gizmo_id is None and o.download_dir is None


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["-i", "a.jsonl"], "input", "a.jsonl"),
        (["--in", "a.jsonl"], "input", "a.jsonl"),
        (["-o", "b.jsonl"], "out", "b.jsonl"),
        (["--out=b.jsonl"], "out", "b.jsonl"),
        (["-g", "7"], "concurrency", 7),
        (["--goroutine", "7"], "concurrency", 7),
        (["-q", "2.5"], "qps", 2.5),
        (["--qps", "3"], "qps", 3.0),
        (["-m", "gpt-4"], "model", "gpt-4"),
        (["-z", "g-HMNcP6w7d"], "gizmo_id", "g-HMNcP6w7d"),
        (["--gizmo-id", "g-x"], "gizmo_id", "g-x"),
        (["-f"], "fix", True),
        (["-f=true"], "fix", True),
        (["--fix", "false"], "fix", False),
        (["-s=false"], "history_and_training_disabled", False),
        (["--history_and_training_disabled=false"], "history_and_training_disabled", False),
        (["-u", "http://h/standard/all-tools"], "chat_url", "http://h/standard/all-tools"),
        (["--chat-url", "http://h/c"], "chat_url", "http://h/c"),
        (["-l", "http://h/standard/uploaded"], "upload_url", "http://h/standard/uploaded"),
        (["--upload_url", "http://h/u"], "upload_url", "http://h/u"),
        (["-e=false"], "enable_download", False),
        (["--enable-download", "false"], "enable_download", False),
        (["-d", "dl"], "download_dir", "dl"),
        (["-p", "MINE"], "download_prefix", "MINE"),
        (["--download-prefix=MINE"], "download_prefix", "MINE"),
        (["-r=false"], "rdb", False),
        (["-v", "5"], "rdb_interval", 5),
        (["--rdb_interval", "5"], "rdb_interval", 5),
        (["-n", "--nsqd-tcp-address", "h:4150"], "enable_nsq", True),
        (["--enable_nsq", "--lookupd-http-address", "h:4161"], "enable_nsq", True),
        (["--upstream", "openai"], "upstream", "openai"),
        (["--base-url", "http://x"], "base_url", "http://x"),
        (["--tier", "concurrent"], "tier", "concurrent"),
        (["--access-token", "t"], "access_token", "t"),
        (["--credentials", "c.pub"], "credentials", Path("c.pub")),
    ],
)
def test_every_original_flag_is_accepted(argv: list[str], field: str, value: Any) -> None:
    assert getattr(parse(argv), field) == value


def test_cobra_spellings_are_normalised() -> None:
    assert normalize_argv(["-f=true", "--upload_url=x", "-i", "a=b"]) == [
        "-f",
        "true",
        "--upload-url=x",
        "-i",
        "a=b",
    ]


@pytest.mark.parametrize(
    "argv", [["-g", "0"], ["-q", "-1"], ["-n"], ["--upstream", "nope"], ["-f", "maybe"]]
)
def test_bad_usage_exits_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2


# --- running it ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "2", "--jitter-ms", "30") as server:
        yield server


def run_cmd(
    cwd: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "run", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
    )


def upstream(mock: MockUpstream, *extra: str) -> list[str]:
    return ["--base-url", mock.url, "--access-token", mock.token, "-q", "0", *extra]


def write_input(folder: Path, n: int, asks: int = 2, name: str = "in.jsonl") -> Path:
    path = folder / name
    with path.open("w") as fh:
        for i in range(n):
            record = {
                "id": f"r{i}",
                "asks": [{"id": f"a{k}", "content": f"record {i} ask {k}"} for k in range(asks)],
                "answers": None,
                "iErr": None,
                "extra": {"i": i},
            }
            fh.write(json.dumps(record) + "\n")
    return path


def essence(records: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What must not depend on timing: ids, order, errors and the answers' texts."""
    out = []
    for r in records:
        texts = tuple(
            a["contents"][-1]["message"]["content"]["parts"][0] for a in r.get("answers") or []
        )
        out.append((r["id"], r["iErr"], texts, r.get("extra")))
    return out


def test_output_is_in_input_order_and_exit_0(mock: MockUpstream, tmp_path: Path) -> None:
    write_input(tmp_path, 120)
    result = run_cmd(tmp_path, "-i", "in.jsonl", "-o", "out.jsonl", "-g", "40", *upstream(mock))
    assert result.returncode == 0, result.stderr[-2000:]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"r{i}" for i in range(120)]
    for r in records:
        texts = essence([r])[0][2]
        assert [t.split(":", 1)[1].split("(")[0].strip() for t in texts] == [
            f"{r['id'].replace('r', 'record ')} ask 0",
            f"{r['id'].replace('r', 'record ')} ask 1",
        ]
    assert "finished batch" in result.stderr and "120 ok" in result.stderr
    assert not (tmp_path / "out.journal.jsonl").exists()  # complete: the output is the record


def test_failures_exit_1_with_a_resume_command_that_works(tmp_path: Path) -> None:
    write_input(tmp_path, 60, asks=1)
    shutil.copy(DATA / "1.jpeg", tmp_path / "1.jpeg")
    with (tmp_path / "in.jsonl").open("a") as fh:
        fh.write('{"id": "bad", "asks": [{"id": "a", "content": "x", "images": ["none.png"]}]}\n')
    with MockUpstream("--seed", "4", "--fault-5xx", "0.5") as flaky:
        first = run_cmd(
            tmp_path, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(flaky, "--retries", "0")
        )
    assert first.returncode == 1
    records = read_jsonl(tmp_path / "out.jsonl")
    assert len(records) == 61
    failed = [r for r in records if r["iErr"]]
    assert 5 < len(failed) < 61
    assert "resume    gpt4batch run -i out.jsonl -f -o out.fix.jsonl" in first.stderr
    assert read_jsonl(tmp_path / "out.rejects.jsonl")[0]["line"] == 61

    with MockUpstream("--seed", "5") as healthy:
        second = run_cmd(
            tmp_path, "-i", "out.jsonl", "-f", "-o", "out.fix.jsonl", *upstream(healthy)
        )
        calls = healthy.stats()["total_calls"]
    resumed = read_jsonl(tmp_path / "out.fix.jsonl")
    assert [r["id"] for r in resumed] == [r["id"] for r in records]
    assert calls == len(failed) - 1  # only the failed ones ran again (the reject has no call)
    for before, after in zip(records, resumed, strict=True):
        if before["iErr"] is None:
            assert after == before  # passed through untouched
    assert second.returncode == 1  # the missing image still fails, and says so
    assert [r["id"] for r in resumed if r["iErr"]] == ["bad"]


def test_missing_input_and_missing_token_exit_2_before_any_work(
    mock: MockUpstream, tmp_path: Path
) -> None:
    before = mock.stats()["total_calls"]
    r1 = run_cmd(tmp_path, "-i", "nope.jsonl", *upstream(mock))
    assert r1.returncode == 2 and "no such input file: nope.jsonl" in r1.stderr
    write_input(tmp_path, 3)
    r2 = run_cmd(
        tmp_path,
        "-i", "in.jsonl", "--base-url", mock.url, "--credentials", str(tmp_path / "none.pub"),
        env={"GPT4BATCH_ACCESS_TOKEN": ""},
    )  # fmt: skip
    assert r2.returncode == 2 and "no access token" in r2.stderr
    assert mock.stats()["total_calls"] == before
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("source", ["flag", "env", "file", "expired"])
def test_token_sources(mock: MockUpstream, tmp_path: Path, source: str) -> None:
    write_input(tmp_path, 2, asks=1)
    creds = tmp_path / "creds.pub"
    args = ["-i", "in.jsonl", "--base-url", mock.url, "-q", "0", "--credentials", str(creds)]
    env = {"GPT4BATCH_ACCESS_TOKEN": ""}
    if source == "flag":
        args += ["--access-token", mock.token]
    elif source == "env":
        env["GPT4BATCH_ACCESS_TOKEN"] = mock.token
    else:
        expiry = "2020-01-01T00:00:00" if source == "expired" else "2099-01-01T00:00:00"
        creds.write_text(json.dumps({"access_token": mock.token, "expired_at": expiry}))
    result = run_cmd(tmp_path, *args, env=env)
    if source == "expired":
        assert result.returncode == 2 and "expired" in result.stderr
    else:
        assert result.returncode == 0, result.stderr[-1500:]
        assert count_lines(tmp_path / "out.jsonl") == 2
    assert mock.token not in result.stdout + result.stderr


def test_sigint_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    """Nothing paid for is lost: interrupted + resumed make exactly the calls of one run."""
    flags = ("-g", "8", "--grace", "30")
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    for folder in (whole, parts):
        folder.mkdir()
        write_input(folder, 80)

    with MockUpstream("--seed", "9", "--latency-ms", "40") as sim:
        done = run_cmd(whole, "-i", "in.jsonl", "-o", "out.jsonl", *upstream(sim, *flags))
        assert done.returncode == 0, done.stderr[-1500:]
        uninterrupted_calls = sim.stats()["total_calls"]

    with MockUpstream("--seed", "9", "--latency-ms", "40") as sim:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "-o", "out.jsonl",
             *upstream(sim, *flags)],
            cwd=parts, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        wait_for(lambda: sim.stats()["total_calls"] >= 40, 30, "the run to get going")
        os.kill(proc.pid, signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 1, stderr[-1500:]
        assert "stopping; in-flight calls get 30s" in stderr
        stopped = read_jsonl(parts / "out.jsonl")
        assert len(stopped) == 80
        not_run = [r for r in stopped if r["iErr"]]
        assert not_run and all(r["iErr"]["code"] == 499 for r in not_run)
        assert "-f -o out.fix.jsonl" in stderr

        resumed = run_cmd(
            parts, "-i", "out.jsonl", "-f", "-o", "out.fix.jsonl", *upstream(sim, *flags)
        )
        assert resumed.returncode == 0, resumed.stderr[-1500:]
        total_calls = sim.stats()["total_calls"]

    final = read_jsonl(parts / "out.fix.jsonl")
    assert essence(final) == essence(read_jsonl(whole / "out.jsonl"))
    assert total_calls == uninterrupted_calls


def test_kill_9_then_the_same_command_continues_from_the_journal(tmp_path: Path) -> None:
    write_input(tmp_path, 60, asks=1)
    with MockUpstream("--seed", "3", "--latency-ms", "30") as sim:
        args = ["-i", "in.jsonl", "-o", "out.jsonl", *upstream(sim, "-g", "4")]
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt4batch.cli", "run", *args],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        journal = tmp_path / "out.journal.jsonl"
        wait_for(lambda: count_lines(journal) >= 21, 30, "some journaled results")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        journaled = count_lines(journal) - 1  # minus the header
        calls_before = sim.stats()["total_calls"]
        again = run_cmd(tmp_path, *args)
        calls_after = sim.stats()["total_calls"]
    assert again.returncode == 0, again.stderr[-1500:]
    # Issue 23, one resume story: the killed run printed nothing; its next start says it
    # continues (one line), and there is no second procedure to learn.
    said = re.findall(
        r"^gpt4batch run: continuing the interrupted run of this batch from out.journal.jsonl: "
        r"(\d+) records already done are not called again$",
        again.stderr,
        re.MULTILINE,
    )
    assert len(said) == 1 and 20 <= int(said[0]) <= journaled, again.stderr[-1500:]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"r{i}" for i in range(60)]
    assert all(r["iErr"] is None for r in records)
    # Journaled records were not paid for twice.
    assert calls_after - calls_before <= 60 - journaled


def test_enable_nsq_runs_the_same_pipeline_through_real_nsqd(
    mock: MockUpstream, tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    write_input(tmp_path, 40)
    result = run_cmd(
        tmp_path,
        "-i", "in.jsonl", "-o", "out.jsonl", "-n", "--nsqd-tcp-address", nsqd.tcp_address,
        "--topic-prefix", topic_prefix, *upstream(mock),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [f"r{i}" for i in range(40)]
    # The work went through nsqd: the asks topic saw every record.
    asks = [t for t in nsqd.stats()["topics"] if t["topic_name"] == f"{topic_prefix}.asks"]
    assert asks and asks[0]["message_count"] == 40


def test_second_ctrl_c_aborts_at_once_and_leaves_valid_files(tmp_path: Path) -> None:
    write_input(tmp_path, 10, asks=1)
    err = tmp_path / "stderr.txt"
    with MockUpstream("--latency-ms", "3000") as sim:
        args = ["-i", "in.jsonl", "-o", "out.jsonl", *upstream(sim, "-g", "5", "--grace", "60")]
        with err.open("w") as fh:
            proc = subprocess.Popen(
                [sys.executable, "-m", "gpt4batch.cli", "run", *args],
                cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=fh,
            )  # fmt: skip
            wait_for(lambda: sim.stats()["in_flight"] >= 5, 30, "calls in flight")
            os.kill(proc.pid, signal.SIGINT)
            wait_for(lambda: "stopping" in err.read_text(), 10, "the first stop")
            started = time.monotonic()
            os.kill(proc.pid, signal.SIGINT)
            proc.wait(10)
        assert proc.returncode == 130
        assert time.monotonic() - started < 5  # did not wait for the 3 s calls or the grace
        journal = tmp_path / "out.journal.jsonl"
        assert all(json.loads(line) for line in journal.read_text().splitlines())
        assert not list(tmp_path.glob(".out.jsonl.*.tmp"))  # no half-written output
        again = run_cmd(tmp_path, *args)
    assert again.returncode == 0, again.stderr[-1500:]
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [f"r{i}" for i in range(10)]


def test_original_flags_are_generated_from_the_caller_settings() -> None:
    """Each original flag takes its default and help from the setting it stands for."""
    from gpt4batch.cli.run.options import ORIGINAL_ALIASES, build_parser
    from gpt4batch.services.caller.settings import CallerSettings

    actions = {a.dest: a for a in build_parser()._actions}
    for spelling, name in ORIGINAL_ALIASES.items():
        action = actions[name]
        info = CallerSettings.model_fields[name]
        assert set(spelling.split("/")) <= set(action.option_strings)
        assert "--" + name.replace("_", "-") in action.option_strings
        assert action.default == info.get_default(call_default_factory=True)
        assert (info.description or "").rstrip(".") in (action.help or "")


def test_tpm_reaches_the_callers_limiter_and_a_negative_one_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """`run --tpm N` (a generated caller flag, under --help-all) becomes the caller's
    token limit; -5 exits 2."""
    from gpt4batch.cli.run.command import caller_settings
    from gpt4batch.cli.run.options import parse
    from gpt4batch.common.settings import BaseServiceSettings
    from gpt4batch.services.caller.limits import process_limiter

    opts = parse(["-i", str(tmp_path / "in.jsonl"), "--tpm", "90000", "--access-token", "t"])
    settings = caller_settings(opts, BaseServiceSettings())
    assert settings.tpm == 90000
    assert process_limiter(settings).tokens.limit == 90000
    with pytest.raises(SystemExit) as refused:
        parse(["--tpm", "-5"])
    assert refused.value.code == 2
    assert "tpm" not in parse(["-i", "x.jsonl"]).extra  # not given: the caller's default
