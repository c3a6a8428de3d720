"""Issue 21, usage and cost: every output line of `gpt4batch run` says what its calls used
and cost (reported by an OpenAI upstream, estimated for gpt4api), the summary and the
errors file carry the totals, `--budget-usd` stops new calls with iErr 402 and a resume
command that works (over real nsqd), and `--estimate` makes no call."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import pytest

from gpt4batch.common.tokens import text_tokens
from gpt4batch.common.usage import answer_text
from tests.cli.test_run import run_cmd, upstream, write_input
from tests.cli.test_run_resume import resume_words
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl

PRICES = ["--input-usd-per-1m", "2.5", "--output-usd-per-1m", "10", "--usd-per-call", "0.001"]


def priced(prompt: int, completion: int, calls: int) -> float:
    return prompt * 2.5 / 1e6 + completion * 10 / 1e6 + calls * 0.001


def summary_usage(stderr: str) -> tuple[int, int, int, float]:
    """(total, prompt, completion, cost) from the summary's `usage` line."""
    match = re.search(
        r"^  usage     ([\d,]+) tokens \(([\d,]+) prompt \+ ([\d,]+) completion(?:, estimated)?\)"
        r", \$([\d,.]+)$",
        stderr,
        re.M,
    )
    assert match, stderr[-2000:]
    total, prompt, completion = (int(match[i].replace(",", "")) for i in (1, 2, 3))
    return total, prompt, completion, float(match[4].replace(",", ""))


@pytest.mark.parametrize("kind", ["openai", "gpt4api"])
def test_every_line_says_its_usage_and_the_summary_sums_it(tmp_path: Path, kind: str) -> None:
    """Given 6 records of 2 asks, when they run at prices, then each line's `usage` is the
    sum over its answers: the reported usage (openai), else estimated (gpt4api: the
    answer's text by the documented rule); the cost is priced; the summary says the sum."""
    write_input(tmp_path, 6, asks=2)
    kind_flags = ["--upstream", "openai"] if kind == "openai" else []
    with MockUpstream("--seed", "3") as mock:
        result = run_cmd(tmp_path, "-i", "in.jsonl", *kind_flags, *upstream(mock), *PRICES)
    assert result.returncode == 0, result.stderr[-2000:]
    lines = read_jsonl(tmp_path / "out.jsonl")
    assert len(lines) == 6
    sums = [0, 0]
    for line in lines:
        usage = line["usage"]
        assert set(usage) == {
            "prompt_tokens", "completion_tokens", "total_tokens", "estimated", "cost_usd"
        }  # fmt: skip
        if kind == "openai":
            reported = [a["usage"] for a in line["answers"]]
            assert usage["prompt_tokens"] == sum(u["prompt_tokens"] for u in reported)
            assert usage["completion_tokens"] == sum(u["completion_tokens"] for u in reported)
            assert usage["estimated"] is False
        else:
            assert usage["estimated"] is True
            texts = [answer_text(a) for a in line["answers"]]
            assert all(texts)
            assert usage["completion_tokens"] == sum(text_tokens(t) for t in texts)
            assert usage["prompt_tokens"] > 0
        p, c = usage["prompt_tokens"], usage["completion_tokens"]
        assert usage["total_tokens"] == p + c
        assert math.isclose(usage["cost_usd"], priced(p, c, 2), rel_tol=1e-9)
        sums[0] += p
        sums[1] += c
    total, prompt, completion, cost = summary_usage(result.stderr)
    assert (prompt, completion, total) == (sums[0], sums[1], sum(sums))
    assert cost == pytest.approx(priced(sums[0], sums[1], 12), abs=1e-4)
    assert ("estimated)" in result.stderr) == (kind == "gpt4api")


def test_without_prices_the_cost_is_zero(tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    with MockUpstream() as mock:
        result = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock))
    assert result.returncode == 0, result.stderr[-2000:]
    for line in read_jsonl(tmp_path / "out.jsonl"):
        assert line["usage"]["cost_usd"] == 0 and line["usage"]["total_tokens"] > 0


def test_the_errors_file_says_what_failed_records_cost(tmp_path: Path) -> None:
    """A failed record's errors row carries its `usage` as on its output line (here a file
    outside the allowed folders: refused before any call, so 0 tokens)."""
    records = [
        {"id": "ok", "asks": [{"id": "a", "content": "hi"}]},
        {"id": "bad", "asks": [{"id": "a", "content": "x", "images": ["/etc/hostname"]}]},
    ]
    (tmp_path / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with MockUpstream() as mock:
        result = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock), *PRICES)
    assert result.returncode == 1, result.stderr[-2000:]
    [row] = read_jsonl(tmp_path / "out.errors.jsonl")
    assert row["id"] == "bad" and row["usage"]["total_tokens"] == 0
    assert row["usage"] == read_jsonl(tmp_path / "out.jsonl")[1]["usage"]


def test_budget_reached_mid_run_resumes_to_every_record_paid_once(
    tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    """Given 24 records at $0.01 a call and --budget-usd 0.05, over real nsqd (-n): calls
    stop once the budget would be passed; the rest get iErr 402; exit 1 with the resume
    command. Pasting it (and then its own) runs the rest in budget-sized steps; in the end
    every record is in the output once and the simulator was called once per record."""
    write_input(tmp_path, 24, asks=1)
    nsq = ["-n", "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix]
    money = ["--usd-per-call", "0.01", "--budget-usd", "0.05"]
    with MockUpstream("--latency-ms", "20") as mock:
        env = {"GPT4BATCH_ACCESS_TOKEN": mock.token}
        args = ["-i", "in.jsonl", "-o", "out.jsonl", "--base-url", mock.url, "-q", "0", "-g", "3"]
        result = run_cmd(tmp_path, *args, *nsq, *money, env=env)
        out = tmp_path / "out.jsonl"
        steps = 0
        while True:
            lines = read_jsonl(out)
            assert len(lines) == 24 and [r["id"] for r in lines] == [f"r{i}" for i in range(24)]
            refused = [r for r in lines if r["iErr"] is not None]
            assert all(r["iErr"]["code"] == 402 for r in refused), refused[:1]
            assert all("budget reached" in r["iErr"]["message"] for r in refused)
            assert all(r["usage"]["total_tokens"] == 0 for r in refused)  # never called
            if not refused:
                assert result.returncode == 0, result.stderr[-2000:]
                break
            assert result.returncode == 1, result.stderr[-2000:]
            assert "gpt4batch run: budget reached: $0.05" in result.stderr
            assert f"{len(refused)} records not run keep iErr 402" in result.stderr
            steps += 1
            assert steps <= 6, "the budget stopped nothing, or the resume runs nothing"
            words = resume_words(result.stderr)
            assert "--budget-usd" in words
            result = run_cmd(tmp_path, *words[2:], env=env)
            out = tmp_path / words[words.index("-o") + 1]
        stats = mock.stats()
    assert steps >= 2  # the budget was reached more than once on the way
    assert stats["total_calls"] == 24  # each record paid once, across all the resumes


def test_estimate_makes_no_call(tmp_path: Path) -> None:
    write_input(tmp_path, 5, asks=2)
    with MockUpstream() as mock:
        result = run_cmd(tmp_path, "-i", "in.jsonl", *upstream(mock), *PRICES, "--estimate")
        assert mock.stats()["total_calls"] == 0
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "5 records to run (0 not valid), 10 calls" in text
    match = re.search(r"tokens +([\d,]+) \(([\d,]+) prompt \+ ([\d,]+) completion", text)
    assert match, text
    prompt, completion = int(match[2].replace(",", "")), int(match[3].replace(",", ""))
    assert completion == 10 * 1000  # each answer at the default completion estimate
    assert f"${priced(prompt, completion, 10):,.4f}" in text
    assert not (tmp_path / "out.jsonl").exists()
