"""`run -n` shares the fleet's limit with the caller services beside it (issue 19 item 5:
`--limit-scope` was offered and ignored), on real nsqd."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, read_jsonl


def test_run_n_shares_the_fleets_concurrency_with_a_caller_service(
    tmp_path: Path, nsqd: Any, nsqlookupd: Any, topic_prefix: str, procs: ServiceProcs
) -> None:
    """A caller service with -g 2 and `run -n -g 40` in one limit group (the topic prefix):
    together they never have more than 2 conversations at the upstream."""
    write_input(tmp_path, 24, asks=1)
    nsq = ["--nsqd-tcp-address", nsqd.tcp_address, "--lookupd-http-address",
           nsqlookupd.http_address, "--topic-prefix", topic_prefix]  # fmt: skip
    with MockUpstream("--latency-ms", "150") as mock:
        procs.start(
            "caller", "caller", "-g", "2", "--qps", "0", "--base-url", mock.url,
            "--access-token", mock.token,
        )  # fmt: skip
        result = run_cmd(
            tmp_path,
            "-i",
            "in.jsonl",
            "-o",
            "out.jsonl",
            "-n",
            *nsq,
            *upstream(mock, "-g", "40", "--touch-interval", "1"),
        )
        stats = mock.stats()
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(tmp_path / "out.jsonl")) == 24
    assert stats["total_calls"] == 24  # each once (the session nsqd's --msg-timeout is 3 s)
    assert stats["max_in_flight"] <= 2  # the fleet's -g; the run alone would take 40


def test_limit_scope_process_gives_the_run_its_own_limits(
    tmp_path: Path, nsqd: Any, topic_prefix: str
) -> None:
    write_input(tmp_path, 12, asks=1)
    with MockUpstream("--latency-ms", "300") as mock:
        result = run_cmd(
            tmp_path, "-i", "in.jsonl", "-o", "out.jsonl", "-n", "--nsqd-tcp-address",
            nsqd.tcp_address, "--topic-prefix", topic_prefix, "--limit-scope", "process",
            *upstream(mock, "-g", "12"),
        )  # fmt: skip
        stats = mock.stats()
    assert result.returncode == 0, result.stderr[-3000:]
    assert stats["max_in_flight"] > 2
    assert stats["total_calls"] == 12, stats
