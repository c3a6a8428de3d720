"""A clean `run -n` stop is quiet, and every log line is ours (issue 19, item 7): pynsq's
"connection closed" WARNINGs of our own closes are gone, and what pynsq still logs comes
out in our format."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path
from typing import Any

import structlog

from gpt4batch.common import logging as glog
from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream


def log_lines(stderr: str) -> list[str]:
    """The lines of stderr that are not the run's own report (banner, summary)."""
    return [
        line
        for line in stderr.splitlines()
        if line.strip() and not line.startswith(("gpt4batch run:", "  "))
    ]


def test_a_clean_run_n_stop_prints_no_pynsq_warning_and_only_our_log_lines(
    tmp_path: Path, nsqd: Any, nsqlookupd: Any, topic_prefix: str
) -> None:
    write_input(tmp_path, 10)
    with MockUpstream("--seed", "2") as mock:
        result = run_cmd(
            tmp_path,
            "-i", "in.jsonl", "-o", "out.jsonl", "-n", "--nsqd-tcp-address", nsqd.tcp_address,
            "--lookupd-http-address", nsqlookupd.http_address, "--topic-prefix", topic_prefix,
            *upstream(mock),
        )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "connection closed" not in result.stderr
    lines = log_lines(result.stderr)
    assert lines  # the run does log (so the check below checks something)
    for line in lines:
        event = json.loads(line)  # our JSON lines, not "2026-… WARNING nsq.reader: …"
        assert {"event", "level", "timestamp"} <= event.keys(), line
        assert event["level"] in ("debug", "info"), line


def test_standard_library_loggers_come_out_in_our_format_and_masked() -> None:
    stream = io.StringIO()
    glog.configure("json", "info", stream=stream)
    try:
        logging.getLogger("nsq.reader").warning("[%s] lookupd %s query error", "x", "Bearer s3cr3t")
    finally:
        structlog.reset_defaults()
    event = json.loads(stream.getvalue())
    assert event["level"] == "warning" and event["logger"] == "nsq.reader"
    assert event["event"] == "[x] lookupd Bearer *** query error"
