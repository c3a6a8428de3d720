"""The gateway at scale: the Batch API's per-file limit on requests, and bounded memory.

A file of more than 50,000 requests is refused at upload with a 400 naming the
limit (over 200 MB: 413, tests/security/test_gateway_attacks.py).

A 5,000-line, 40 MB batch goes through the official SDK: upload, validation,
publishing, the results, the output file, and both the output and the input
streamed back. The gateway's peak resident size may grow by at most GROWTH_MB
(half the file) over what it was before: reading the file whole anywhere (its
bytes alone are 40 MB) breaks the bound; its own per-line and buffer overheads
are 6-11 MB here. The full size, 50,000 lines and ~200 MB (the Batch API's
limits), runs in `make bench` (bench/gateway_batch.py --scale), not here.
"""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
from openai import OpenAI

from gpt4batch.services.gateway.batch_steps import PUBLISH_BYTES, PUBLISH_CHUNK, read_lines
from gpt4batch.services.gateway.settings import MAX_REQUESTS
from tests.gateway.test_openai_sdk import TERMINAL, Gateway, wait_status
from tests.support.batch_files import Conversations, reset_peak, status_mb, write_lines
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs

LINES, LINE_BYTES = 5_000, 8192
#: Peak resident growth allowed during the big batch: half the input file.
GROWTH_MB = 20.0


def run_batch(client: OpenAI, procs: ServiceProcs, source: Path, work: Path) -> int:
    """Upload, wait for completion, stream the output and the input back; output lines."""
    with source.open("rb") as fh:
        uploaded = client.files.create(file=(source.name, fh), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    done = wait_status(client, batch.id, TERMINAL, procs, 600)
    assert done.status == "completed" and done.output_file_id, done
    out, back = work / f"{source.stem}-out.jsonl", work / f"{source.stem}-back.jsonl"
    with client.files.with_streaming_response.content(done.output_file_id) as response:
        response.stream_to_file(out)
    with client.files.with_streaming_response.content(uploaded.id) as response:
        response.stream_to_file(back)
    assert back.read_bytes() == source.read_bytes()
    with out.open("rb") as fh:
        return sum(1 for _ in fh)


def test_a_40_mb_batch_in_bounded_memory(procs: ServiceProcs, tmp_path: Path) -> None:
    convs = Conversations(LINE_BYTES)
    warm = write_lines(tmp_path / "warm.jsonl", 200, convs.batch_line)
    big = write_lines(tmp_path / "big.jsonl", LINES, convs.batch_line, start=200)
    assert big.stat().st_size > 40_000_000
    with MockUpstream("--fast") as mock:
        gateway = Gateway(procs, tmp_path / "gw").start()
        procs.start(
            "caller", "caller", "--base-url", mock.url, "--access-token", mock.token,
            "--qps", "0", "--concurrency", "64", "--enable-download", "false",
        )  # fmt: skip
        client = gateway.client().with_options(timeout=120)
        pid = procs.procs["gateway"].pid
        assert run_batch(client, procs, warm, tmp_path) == 200  # every code path once

        before = status_mb(pid, "VmRSS")
        reset_peak(pid)
        assert run_batch(client, procs, big, tmp_path) == LINES
        grown = status_mb(pid, "VmHWM") - before
    print(f"gateway: {before:.0f} MB before, peak +{grown:.1f} MB over a {LINES}-line batch")
    assert grown <= GROWTH_MB, f"the gateway's peak grew {grown:.1f} MB (bound {GROWTH_MB})"


def test_a_publishing_step_reads_at_most_publish_bytes(tmp_path: Path) -> None:
    long = b'{"ask":"' + b"x" * 100_000 + b'"}\n'
    asks = tmp_path / "asks.jsonl"
    asks.write_bytes(long * 30 + b"short\n")

    bodies, end = read_lines(asks, 0, PUBLISH_CHUNK, PUBLISH_BYTES)

    assert len(bodies) == PUBLISH_BYTES // len(long) < PUBLISH_CHUNK  # 10 of 100 KB, not 30
    assert end == len(long) * len(bodies) and bodies[0] == long[:-1]
    one, _ = read_lines(asks, 0, PUBLISH_CHUNK, 1000)  # a line over the cap goes alone
    assert one == [long[:-1]]
    rest, end = read_lines(asks, len(long) * 29, PUBLISH_CHUNK, PUBLISH_BYTES)
    assert rest == [long[:-1], b"short"] and end == asks.stat().st_size


def test_a_file_over_the_request_limit_is_refused_at_upload(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    client = Gateway(procs, tmp_path / "gw").start().client()
    convs = Conversations()
    at_limit = write_lines(tmp_path / "at.jsonl", MAX_REQUESTS, convs.batch_line)
    with at_limit.open("a") as fh:
        fh.write("\n  \n")  # blank lines are not requests
    over = write_lines(tmp_path / "over.jsonl", MAX_REQUESTS + 1, convs.batch_line)

    with at_limit.open("rb") as fh:
        accepted = client.files.create(file=("at.jsonl", fh), purpose="batch")
    assert accepted.bytes == at_limit.stat().st_size
    with pytest.raises(openai.BadRequestError) as info, over.open("rb") as fh:
        client.files.create(file=("over.jsonl", fh), purpose="batch")

    error = info.value.body
    assert error["code"] == "too_many_requests_in_file" and error["param"] == "file"
    assert f"more than {MAX_REQUESTS} requests" in error["message"]
    assert "--max-requests-per-file" in error["message"]
    assert [f.id for f in client.files.list()] == [accepted.id]  # nothing kept of it
    assert len(list((tmp_path / "gw" / "files").iterdir())) == 1


def test_a_file_over_the_size_limit_is_refused_naming_it(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    client = Gateway(procs, tmp_path / "gw", "--max-upload-bytes", "1048576").start().client()
    big = write_lines(tmp_path / "big.jsonl", 300, Conversations(LINE_BYTES).batch_line)

    with pytest.raises(openai.APIStatusError) as info, big.open("rb") as fh:
        client.files.create(file=("big.jsonl", fh), purpose="batch")

    assert info.value.status_code == 413
    error = info.value.body
    assert error["code"] == "request_too_large"
    assert "A file is at most 1048576 bytes (--max-upload-bytes" in error["message"]
    assert not client.files.list().data
