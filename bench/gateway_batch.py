"""Batch API gateway against the file pipeline, side by side in one invocation.

    .venv/bin/python bench/gateway_batch.py --requests 2000
    .venv/bin/python bench/gateway_batch.py --scale     # 50,000 lines, ~200 MB (the API's limits)

Both run N chat requests through the callers against the simulator with zero
latency over one real nsqd:
- gateway: the official SDK uploads the file (from disk), creates the batch,
  polls until `completed` and streams the output file to disk; the clock covers
  all of it. The gateway's peak RSS is its VmHWM at the end, and a sampler
  (every 0.1 s) says in which phase the resident size was highest;
- pipeline: `gpt4batch ingest` of the same conversations as gpt4batch records,
  timed until the sink writes `<out>.done`.
A 100-record pipeline run warms the callers first. `--line-bytes B` pads each
line's user message (a support ticket's prose) so the line is about B bytes;
`--scale` is `--requests 50000 --line-bytes 4096 --fast --window 0` (the
gateway's default window): the Batch API's per-file limits (50,000 requests,
200 MB). `--fast` runs the simulator's
load-generator path (gpt4api answers; callers of the default kind) instead of
the full one with `--upstream openai`. `--json` ends with one line of figures
(bench/table.py reads it).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support import cpu_seconds, peak_rss_mb  # noqa: E402
from tests.support.batch_files import Conversations, status_mb, write_lines  # noqa: E402
from tests.support.mock_upstream import MockUpstream  # noqa: E402
from tests.support.nsq_servers import free_port, run_nsqd  # noqa: E402
from tests.support.pipeline import ServiceProcs, wait_for  # noqa: E402

KEY = "sk-bench"


class RssSampler:
    """VmRSS of one process every 0.1 s, remembering the phase it peaked in."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.phase = "start"
        self.peak: dict[str, float] = {}  # phase -> MB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                mb = status_mb(self.pid, "VmRSS")
            except OSError:
                return
            self.peak[self.phase] = max(self.peak.get(self.phase, 0.0), mb)

    def summary(self) -> str:
        return ", ".join(f"{phase} {mb:.0f}" for phase, mb in self.peak.items())


def run_gateway(
    procs: ServiceProcs, work: Path, n: int, convs: Conversations, extra: list[str]
) -> dict[str, Any]:
    from openai import OpenAI

    source = write_lines(work / "gateway-input.jsonl", n, convs.batch_line)
    port = free_port()
    gateway = procs.start(
        "gateway", "gateway", "--port", str(port), "--host", "127.0.0.1",
        "--data-dir", str(work / "gw"), "--api-key", KEY, *extra,
    )  # fmt: skip
    client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=KEY, max_retries=5)
    client = client.with_options(timeout=600)
    out = work / "gateway-output.jsonl"
    cpu0 = cpu_seconds(gateway.pid)
    with RssSampler(gateway.pid) as rss:
        started = time.perf_counter()
        rss.phase = "upload"
        with source.open("rb") as fh:
            uploaded = client.files.create(file=("bench.jsonl", fh), purpose="batch")
        uploaded_at = time.perf_counter()
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        while batch.status not in ("completed", "failed", "cancelled", "expired"):
            time.sleep(0.5)
            batch = client.batches.retrieve(batch.id)
            rss.phase = batch.status
            procs.assert_alive()
        assert batch.status == "completed" and batch.output_file_id, batch
        rss.phase = "download"
        with client.files.with_streaming_response.content(batch.output_file_id) as response:
            response.stream_to_file(out)
        seconds = time.perf_counter() - started
    with out.open("rb") as fh:
        lines = sum(1 for _ in fh)
    assert lines == n, f"{lines} output lines of {n}"
    return {
        "seconds": seconds,
        "upload_seconds": uploaded_at - started,
        "input_mb": source.stat().st_size / 1e6,
        "cpu": cpu_seconds(gateway.pid) - cpu0,
        "peak_rss_mb": peak_rss_mb(gateway.pid),
        "phases": rss.summary(),
    }


def run_pipeline(procs: ServiceProcs, source: Path, n: int, name: str, outbox: Path) -> float:
    """One batch through ingest and the (one) sink, writing into `outbox`."""
    batch = f"bench-{name}-{uuid.uuid4().hex[:8]}"  # ingest resumes a (batch, input) it saw
    started = time.perf_counter()
    procs.run_once(f"ingest-{name}", "ingest", "-i", str(source), "--batch", batch, timeout=1800)
    done = outbox / f"{batch}.done"
    wait_for(done.exists, 1800, "the sink's .done", procs.assert_alive)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--line-bytes", type=int, default=0, help="pad lines to ~B bytes")
    parser.add_argument("--concurrency", type=int, default=100, help="per caller")
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--fast", action="store_true", help="the simulator's --fast path")
    parser.add_argument("--scale", action="store_true", help="50,000 lines of 4 KB, --fast")
    parser.add_argument("--no-pipeline", action="store_true", help="the gateway only")
    parser.add_argument("--json", action="store_true", help="end with a line of figures")
    parser.add_argument(
        "--window",
        type=int,
        default=2000,
        help="the gateway's --window (0, or --scale: its default)",
    )
    parser.add_argument(
        "--gateway-arg", action="append", default=[], help="a flag for the gateway (repeat)"
    )
    args = parser.parse_args()
    if args.scale:
        args.requests, args.line_bytes, args.fast, args.window = 50_000, 4096, True, 0
    n = args.requests
    convs = Conversations(args.line_bytes)
    with tempfile.TemporaryDirectory(prefix="bench-gateway-") as tmp:
        work = Path(tmp)
        mock = MockUpstream("--fast") if args.fast else MockUpstream()
        kind = [] if args.fast else ["--upstream", "openai"]
        with run_nsqd(work, None) as nsqd, mock:
            flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", "bench"]
            with ServiceProcs(work / "procs", flags) as procs:
                for c in range(args.callers):
                    procs.start(
                        f"caller{c}", "caller", *kind, "--base-url", mock.url,
                        "--access-token", mock.token, "--qps", "0",
                        "--concurrency", str(args.concurrency), "--enable-download", "false",
                    )  # fmt: skip
                outbox = work / "outbox"
                procs.start("sink", "sink", "--out-dir", str(outbox))
                warm = write_lines(work / "warmup.jsonl", 100, convs.record_line)
                run_pipeline(procs, warm, 100, "warmup", outbox)  # connections: not measured
                window = ["--window", str(args.window)] if args.window else []
                gw = run_gateway(procs, work, n, convs, [*window, *args.gateway_arg])
                file_seconds = None
                if not args.no_pipeline:
                    (work / "gateway-input.jsonl").unlink()  # disk: one 200 MB file at a time
                    source = write_lines(work / "file.jsonl", n, convs.record_line)
                    file_seconds = run_pipeline(procs, source, n, "file", outbox)
    simulator = "fast simulator, default kind" if args.fast else "simulator, openai kind"
    print(
        f"requests: {n} ({gw['input_mb']:.1f} MB), {args.callers} caller(s), concurrency "
        f"{args.concurrency}, {simulator}, latency 0"
    )
    print(
        f"gateway (SDK upload → completed → output): {gw['seconds']:.2f} s, "
        f"{n / gw['seconds']:.0f} lines/s (upload {gw['upload_seconds']:.1f} s)"
    )
    if file_seconds is not None:
        rate = n / file_seconds
        took = f"{file_seconds:.2f} s, {rate:.0f} lines/s"
        print(f"file pipeline (ingest → sink .done):        {took}")
        print(f"gateway / pipeline time: {gw['seconds'] / file_seconds:.2f}x")
    print(f"gateway process: {gw['cpu']:.2f} CPU s, peak RSS {gw['peak_rss_mb']:.0f} MB")
    print(f"gateway RSS peak by phase (MB): {gw['phases']}")
    if args.json:
        figures = {"requests": n, **gw, "lines_per_s": n / gw["seconds"]}
        if file_seconds is not None:
            figures.update(pipeline_seconds=file_seconds, pipeline_lines_per_s=n / file_seconds)
        print(json.dumps(figures))


if __name__ == "__main__":
    main()
