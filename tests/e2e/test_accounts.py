"""`--accounts`: asks spread over two accounts on real nsqd and the simulator, each held to
its own limits; a conversation on one account; an account refused mid-run leaves the
rotation (logged once), the other finishes the batch, nothing is paid twice, and the
refused one comes back when its token works again."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gpt4batch.services.mock_upstream.keys import key_id
from tests.cli.test_run import write_input
from tests.support.fleet import feed_asks
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, nsq_flags, read_jsonl

TOKEN_A, TOKEN_B = "sk-account-a-111", "sk-account-b-222"
KEY_A, KEY_B = key_id(TOKEN_A), key_id(TOKEN_B)


def accounts_file(folder: Path, mock: MockUpstream, **limits: dict[str, Any]) -> Path:
    """Account a's token from the environment, b's from a file."""
    (folder / "b.token").write_text(TOKEN_B + "\n")
    accounts = [
        {"name": "a", "token_env": "ACC_A_TOKEN", "base_url": mock.url, **limits["a"]},
        {"name": "b", "token_file": str(folder / "b.token"), "base_url": mock.url, **limits["b"]},
    ]
    path = folder / "accounts.json"
    path.write_text(json.dumps({"accounts": accounts}))
    return path


def start_run(folder: Path, nsqd: Any, prefix: str, accounts: Path, *extra: str) -> Any:
    """`run -n` with the accounts (no token of its own), on the session's nsqd."""
    return subprocess.Popen(
        [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "-o", "out.jsonl",
         "-n", "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", prefix,
         "--accounts", str(accounts), "--touch-interval", "1", *extra],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "ACC_A_TOKEN": TOKEN_A},
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def wait_for(what: str, check: Callable[[], bool], timeout: float, proc: Any) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the run ended before {what}"
        assert time.monotonic() < deadline, f"no {what} in {timeout}s"
        time.sleep(0.1)


def key_calls(mock: MockUpstream, key: str) -> dict[str, int]:
    return mock.stats()["key_calls"].get(key, {"calls": 0, "unauthorized": 0})


def answers_in(records: list[dict[str, Any]]) -> int:
    return sum(len(r.get("answers") or []) for r in records)


def test_asks_spread_over_two_accounts_each_within_its_own_qps(
    tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    """a at 6/s, b at 3/s: both used about 2:1, neither past its limit in any 1 s; every
    two-ask conversation on one account (the simulator answers another key's call in a
    conversation with 404)."""
    write_input(tmp_path, 60, asks=2)
    with MockUpstream("--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "40") as mock:
        path = accounts_file(tmp_path, mock, a={"qps": 6}, b={"qps": 3})
        run = start_run(tmp_path, nsqd, topic_prefix, path, "-g", "30")
        _, stderr = run.communicate(timeout=120)
        stats = mock.stats()
    assert run.returncode == 0, stderr[-3000:]
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(60))
    assert all(r["iErr"] is None and len(r["answers"]) == 2 for r in records), stderr[-2000:]
    a, b = stats["key_calls"][KEY_A], stats["key_calls"][KEY_B]
    assert a["calls"] + b["calls"] == 120 == stats["total_calls"]  # each ask paid once
    assert a["max_calls_in_1s"] <= 7 and b["max_calls_in_1s"] <= 4, stats  # q (+1: jitter)
    assert 1.4 <= a["calls"] / b["calls"] <= 2.8, stats  # spread by the limits, 2:1
    assert stats["foreign_conversation"] == 0 and stats["chain_errors"] == 0, stats
    assert TOKEN_A not in stderr and TOKEN_B not in stderr


def test_an_account_refused_mid_run_leaves_and_comes_back(
    tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    """a's token refused mid-run: logged once, b goes on, nothing paid twice, every record
    once; a's token accepted again: a is back in the rotation and calls again."""
    write_input(tmp_path, 120, asks=2)
    with MockUpstream("--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "40") as mock:
        path = accounts_file(tmp_path, mock, a={"qps": 8}, b={"qps": 4})
        run = start_run(
            tmp_path, nsqd, topic_prefix, path, "-g", "20", "--auth-retry-interval", "1"
        )
        try:
            wait_for("calls on a", lambda: key_calls(mock, KEY_A)["calls"] >= 20, 60, run)
            httpx.post(f"{mock.url}/keys/refuse", json={"key": KEY_A}).raise_for_status()
            wait_for("a refusal", lambda: key_calls(mock, KEY_A)["unauthorized"] >= 1, 30, run)
            calls_while_out = key_calls(mock, KEY_A)["calls"]
            before = key_calls(mock, KEY_B)["calls"]
            wait_for("b going on", lambda: key_calls(mock, KEY_B)["calls"] >= before + 12, 30, run)
            assert key_calls(mock, KEY_A)["calls"] == calls_while_out  # out of the rotation
            httpx.post(f"{mock.url}/keys/accept", json={"key": KEY_A}).raise_for_status()
            wait_for(
                "a back", lambda: key_calls(mock, KEY_A)["calls"] >= calls_while_out + 6, 30, run
            )
            _, stderr = run.communicate(timeout=120)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        stats = mock.stats()
    records = read_jsonl(tmp_path / "out.jsonl")
    refused = [r for r in records if r["iErr"] is not None]
    # Failed records (those refused midway) make exit 1 and a resume hint, as any failure.
    assert run.returncode == (1 if refused else 0), stderr[-3000:]
    assert stderr.count("leaves the rotation") == 1, stderr[-3000:]
    assert "back in the rotation" in stderr, stderr[-3000:]
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(120))
    paid = stats["key_calls"][KEY_A]["calls"] + stats["key_calls"][KEY_B]["calls"]
    assert paid == answers_in(records), stats  # every answered call in the output: none twice
    # Only conversations refused after their first answer end so (their account's), <= -g.
    assert all(r["iErr"]["code"] == 401 and len(r["answers"]) == 1 for r in refused), refused
    assert len(refused) <= 20
    assert stats["foreign_conversation"] == 0, stats
    assert TOKEN_A not in stderr and TOKEN_B not in stderr


def test_two_caller_services_hold_each_accounts_qps_across_the_fleet(
    tmp_path: Path, nsqd: Any, nsqlookupd: Any, topic_prefix: str
) -> None:
    """Two `caller --accounts` in one limit group: each account's QPS is the fleet's (its
    limit group `<prefix>.<account>`), not each caller's (that would be twice as many)."""
    with MockUpstream("--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "40") as mock:
        path = accounts_file(tmp_path, mock, a={"qps": 6}, b={"qps": 3})
        flags = [*nsq_flags(nsqd, nsqlookupd, topic_prefix), "--accounts", str(path)]
        with ServiceProcs(tmp_path, flags, env={"ACC_A_TOKEN": TOKEN_A}) as procs:
            feed_asks([nsqd], topic_prefix, 0)  # topics and channels first
            for name in ("caller-1", "caller-2"):
                procs.start(name, "caller", "-g", "20", "--retries", "0")
            feed_asks([nsqd], topic_prefix, 90)
            deadline = time.monotonic() + 60
            while mock.stats()["total_calls"] < 90:
                assert time.monotonic() < deadline, mock.stats()
                time.sleep(0.2)
            time.sleep(0.5)
            stats = mock.stats()
            logs = "".join(p.read_text() for p in procs.logs.glob("caller-*.log"))
    a, b = stats["key_calls"][KEY_A], stats["key_calls"][KEY_B]
    assert a["calls"] + b["calls"] == 90 == stats["total_calls"], stats
    assert a["max_calls_in_1s"] <= 7 and b["max_calls_in_1s"] <= 4, stats  # not 12 and 6
    assert a["calls"] > b["calls"] > 0, stats
    groups: dict[str, int] = {}
    for line in logs.splitlines():
        event = json.loads(line) if line.startswith("{") else {}
        if event.get("event") == "limit group changed":
            groups[event["group"]] = max(groups.get(event["group"], 0), len(event["members"]))
    # Both callers in each account's group; none in the caller's own (no token of its own).
    assert groups == {f"{topic_prefix}.a": 2, f"{topic_prefix}.b": 2}, groups
    assert TOKEN_A not in logs and TOKEN_B not in logs


def test_each_accounts_budget_holds_and_a_record_no_account_can_pay_gets_402(
    tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    """$0.01 a call: a may spend $0.05, b $0.03. Eight records are paid (five on a, three on
    b), each account leaves the rotation once its budget is reached (logged once), and the
    other four records get iErr 402, unpaid; every record once."""
    write_input(tmp_path, 12, asks=1)
    with MockUpstream("--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "40") as mock:
        path = accounts_file(
            tmp_path,
            mock,
            a={"qps": 0, "usd_per_call": 0.01, "budget_usd": 0.05},
            b={"qps": 0, "usd_per_call": 0.01, "budget_usd": 0.03},
        )
        run = start_run(tmp_path, nsqd, topic_prefix, path, "-g", "4")
        _, stderr = run.communicate(timeout=120)
        stats = mock.stats()
    records = read_jsonl(tmp_path / "out.jsonl")
    assert sorted(r["id"] for r in records) == sorted(f"r{i}" for i in range(12))
    assert run.returncode == 1, stderr[-3000:]  # records not run: exit 1, resume hint
    assert stats["key_calls"][KEY_A]["calls"] == 5, stats
    assert stats["key_calls"][KEY_B]["calls"] == 3, stats
    unpaid = [r for r in records if r["iErr"] is not None]
    assert len(unpaid) == 4 and all(r["iErr"]["code"] == 402 for r in unpaid), unpaid
    assert all(not r.get("answers") for r in unpaid)
    assert stderr.count("account budget reached") == 2, stderr[-3000:]


def test_each_account_holds_its_own_concurrency_in_one_process(tmp_path: Path) -> None:
    """`run` without NSQ, -g 20, accounts of 3 and 2 conversations: the upstream never has
    more than 3 calls of a's open at once, nor 2 of b's (and both are used to the full)."""
    write_input(tmp_path, 40, asks=1)
    with MockUpstream("--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "300") as mock:
        path = accounts_file(
            tmp_path, mock, a={"qps": 0, "concurrency": 3}, b={"qps": 0, "concurrency": 2}
        )
        run = subprocess.run(
            [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "-o", "out.jsonl",
             "-g", "20", "--accounts", str(path)],
            cwd=tmp_path, capture_output=True, text=True, timeout=120,
            env={**os.environ, "ACC_A_TOKEN": TOKEN_A}, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        stats = mock.stats()
    assert run.returncode == 0, run.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 40
    a, b = stats["key_calls"][KEY_A], stats["key_calls"][KEY_B]
    assert (a["max_in_flight"], b["max_in_flight"]) == (3, 2), stats
    assert a["calls"] + b["calls"] == 40, stats


def test_each_account_holds_its_own_tpm(tmp_path: Path, nsqd: Any, topic_prefix: str) -> None:
    """OpenAI accounts at 1,200 and 600 tokens per 10-s window (`--tpm-window 10`, as the
    simulator counts): neither key ever has more accepted within any window, no 429."""
    write_input(tmp_path, 50, asks=1)
    sim = ["--token", TOKEN_A, "--also-token", TOKEN_B, "--latency-ms", "40"]
    with MockUpstream(*sim, "--tpm-window", "10", "--answer-tokens", "40") as mock:
        openai = {"upstream": "openai", "qps": 0}
        path = accounts_file(tmp_path, mock, a={**openai, "tpm": 1200}, b={**openai, "tpm": 600})
        run = start_run(
            tmp_path, nsqd, topic_prefix, path, "-g", "20", "--tpm-window", "10",
            "--max-tokens", "50",
        )  # fmt: skip
        _, stderr = run.communicate(timeout=180)
        stats = mock.stats()
    assert run.returncode == 0, stderr[-3000:]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 50
    a, b = stats["key_tokens"][KEY_A], stats["key_tokens"][KEY_B]
    assert a["max_tokens_in_window"] <= 1200 and b["max_tokens_in_window"] <= 600, stats
    assert a["calls"] > b["calls"] > 0, stats
    assert stats["rate_limited"] == 0, stats
