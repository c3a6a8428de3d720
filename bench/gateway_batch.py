"""Batch API gateway against the file pipeline, side by side in one invocation.

    .venv/bin/python bench/gateway_batch.py --requests 2000

Both run N one-message chat requests through one caller (openai kind) against
the simulator with zero latency over one real nsqd:
- gateway: the official SDK uploads the file, creates the batch, polls until
  `completed` (every 0.2 s) and downloads the output; the clock covers all of it;
- pipeline: `gpt4batch ingest` of the same conversations as gpt4batch records,
  timed until the sink writes `<out>.done`.
A 100-record pipeline run warms the caller first. Prints requests/s of each,
their ratio, and the gateway's CPU seconds and peak RSS.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds, peak_rss_mb, write_records  # noqa: E402
from tests.support.mock_upstream import MockUpstream  # noqa: E402
from tests.support.nsq_servers import free_port, run_nsqd  # noqa: E402
from tests.support.pipeline import ServiceProcs, wait_for  # noqa: E402

KEY = "sk-bench"


def batch_file(n: int) -> bytes:
    lines = []
    for i in range(n):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}.0"}]}
        line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
        lines.append(json.dumps(line, separators=(",", ":")))
    return ("\n".join(lines) + "\n").encode()


def run_gateway(procs: ServiceProcs, work: Path, n: int) -> tuple[float, float, float]:
    from openai import OpenAI

    port = free_port()
    gateway = procs.start(
        "gateway", "gateway", "--port", str(port), "--host", "127.0.0.1",
        "--data-dir", str(work / "gw"), "--api-key", KEY, "--window", "2000",
    )  # fmt: skip
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=5)
    data = batch_file(n)
    cpu0 = cpu_seconds(gateway.pid)
    started = time.perf_counter()
    uploaded = client.files.create(file=("bench.jsonl", data), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed"):
        time.sleep(0.2)
    output = client.files.content(batch.output_file_id).text
    seconds = time.perf_counter() - started
    assert batch.status == "completed" and output.count("\n") == n, batch
    return seconds, cpu_seconds(gateway.pid) - cpu0, peak_rss_mb(gateway.pid)


def run_pipeline(procs: ServiceProcs, work: Path, n: int, name: str) -> float:
    """One batch through ingest and the (one) sink, writing into <work>/outbox."""
    source = write_records(work / f"{name}.jsonl", n)
    batch = f"bench-{name}-{uuid.uuid4().hex[:8]}"  # ingest resumes a (batch, input) it saw
    started = time.perf_counter()
    procs.run_once(f"ingest-{name}", "ingest", "-i", str(source), "--batch", batch)
    done = work / "outbox" / f"{batch}.done"
    wait_for(done.exists, 600, "the sink's .done", procs.assert_alive)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        with run_nsqd(work, None) as nsqd, MockUpstream() as mock:
            flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", "bench"]
            with ServiceProcs(work / "procs", flags) as procs:
                procs.start(
                    "caller", "caller", "--upstream", "openai", "--base-url", mock.url,
                    "--access-token", mock.token, "--qps", "0",
                    "--concurrency", str(args.concurrency), "--enable-download", "false",
                )  # fmt: skip
                procs.start("sink", "sink", "--out-dir", str(work / "outbox"))
                run_pipeline(procs, work, 100, "warmup")  # connections, caches: not measured
                gw_seconds, gw_cpu, gw_rss = run_gateway(procs, work, args.requests)
                file_seconds = run_pipeline(procs, work, args.requests, "file")
    n = args.requests
    print(f"requests: {n}, one caller, concurrency {args.concurrency}, simulator latency 0")
    print(
        f"gateway (SDK upload → completed → output): {gw_seconds:.2f} s, {n / gw_seconds:.0f} req/s"
    )
    rate = n / file_seconds
    print(f"file pipeline (ingest → sink .done):        {file_seconds:.2f} s, {rate:.0f} req/s")
    print(f"gateway / pipeline time: {gw_seconds / file_seconds:.2f}x")
    print(f"gateway process: {gw_cpu:.2f} CPU s, peak RSS {gw_rss:.0f} MB")


if __name__ == "__main__":
    main()
