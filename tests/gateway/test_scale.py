"""The gateway in bounded memory: a 5,000-line, 40 MB batch through the official SDK.

Its peak resident size may grow by at most GROWTH_MB (half the file) over what
it was before the upload, through upload, validation, publishing, the results,
the output file and streaming both the output and the 40 MB input back: reading
the file whole anywhere (its bytes alone are 40 MB) breaks the bound; the
gateway's own per-line and buffer overheads are ~10 MB here. The full size, 50,000
lines and ~200 MB (the Batch API's limits), runs in `make bench`
(bench/gateway_batch.py --scale), not here.
"""

from __future__ import annotations

from pathlib import Path

from openai import OpenAI

from gpt4batch.services.gateway.batches import PUBLISH_BYTES, PUBLISH_CHUNK, _read_lines
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

    bodies, end = _read_lines(asks, 0, PUBLISH_CHUNK, PUBLISH_BYTES)

    assert len(bodies) == PUBLISH_BYTES // len(long) < PUBLISH_CHUNK  # 10 of 100 KB, not 30
    assert end == len(long) * len(bodies) and bodies[0] == long[:-1]
    one, _ = _read_lines(asks, 0, PUBLISH_CHUNK, 1000)  # a line over the cap goes alone
    assert one == [long[:-1]]
    rest, end = _read_lines(asks, len(long) * 29, PUBLISH_CHUNK, PUBLISH_BYTES)
    assert rest == [long[:-1], b"short"] and end == asks.stat().st_size
