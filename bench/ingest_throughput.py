"""Ingest throughput into a real nsqd: generate N lines, time `ingest()`, check nsqd's depth.

Usage: .venv/bin/python bench/ingest_throughput.py [--lines 200000] [--cli [--python PY]]
`--python`: time another tree's ingest CLI (its venv's python) on the same input.
Starts its own nsqd (tests/support/nsq_servers.py) on free ports in a temp folder.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt4batch.common.authenticator import SECRET_ENV, Authenticator
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.reader import open_input, read_lines
from tests.support.nsq_servers import Nsqd, run_nsqd
from tests.support.signing import bus_secret


def generate(path: Path, lines: int, asks: int) -> None:
    """Records shaped like shared/examples/example.jsonl."""
    with path.open("w", encoding="utf-8") as out:
        for i in range(lines):
            record = {
                "id": f"id: {i}",
                "asks": [{"id": f"pid: {k}", "content": f"id-{i}-pid-{k}"} for k in range(asks)],
                "answers": None,
            }
            out.write(json.dumps(record, separators=(",", ":")) + "\n")


async def in_process(nsqd: Nsqd, path: Path, args: argparse.Namespace) -> IngestSummary:
    settings = BaseServiceSettings(nsqd_tcp_address=[nsqd.tcp_address], topic_prefix="bench")
    # Ingest publishes only asks and manifests (open topics): any secret of its own will do.
    bus = NsqBus(settings, service="bench", authenticator=Authenticator.generate())
    await bus.start()
    try:
        with open_input(str(path)) as src:
            return await ingest(
                read_lines(src.stream, 10 * 1024 * 1024),
                bus,
                batch="bench",
                source=src.name,
                base_dir=src.base_dir,
                publish_batch_size=args.publish_batch_size,
                max_outstanding=args.concurrency,
            )
    finally:
        await bus.stop(grace=0)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--asks", type=int, default=4, help="asks per record")
    parser.add_argument("--publish-batch-size", type=int, default=500)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cli", action="store_true", help="time the CLI as a subprocess")
    parser.add_argument(
        "--python", default=sys.executable, help="with --cli: the python whose ingest is timed"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ingest-bench-") as tmp:
        work = Path(tmp)
        path = work / "bench.jsonl"
        generate(path, args.lines, args.asks)
        size_mb = path.stat().st_size / 1e6
        with run_nsqd(work, None, "--mem-queue-size=10000") as nsqd:
            started = time.perf_counter()
            cpu_before = _children_cpu()
            if args.cli:
                subprocess.run(
                    [args.python, "-m", "gpt4batch.services.ingest", "-i", str(path),
                     f"--nsqd-tcp-address={nsqd.tcp_address}", "--topic-prefix=bench",
                     "--batch=bench", "--progress=off", "--log-level=warning",
                     f"--state-dir={work / 'state'}"],
                    check=True,
                    env={**os.environ, SECRET_ENV: bus_secret()},  # ingest needs one (any)
                )  # fmt: skip
            else:
                asyncio.run(in_process(nsqd, path, args))
            seconds = time.perf_counter() - started
            cpu = _children_cpu() - cpu_before  # the CLI's own CPU (0 in-process)
            depth = nsqd.depth("bench.asks", "caller")  # ingest created the channel
        mode = "cli" if args.cli else "in-process"
        print(
            f"{mode}: {args.lines} lines ({size_mb:.1f} MB) in {seconds:.2f}s = "
            f"{args.lines / seconds:,.0f} lines/s"
            + (f", CPU {cpu:.2f} s = {cpu / args.lines * 1e6:.1f} µs/line" if args.cli else "")
            + f"; nsqd bench.asks caller depth {depth}"
        )
        return 0 if depth == args.lines else 1


if __name__ == "__main__":
    raise SystemExit(main())
