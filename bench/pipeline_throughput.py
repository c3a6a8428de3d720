"""End-to-end records/s: ingest → caller → sink over real nsqd, and `gpt4batch run` embedded.

Both against the simulator with zero latency (an "instant upstream"), one ask
per record, measured side by side in one invocation:

    .venv/bin/python bench/pipeline_throughput.py --records 5000 --callers 1

NSQ mode: nsqd, the simulator, a sink and `--callers` caller processes are
started, the clock starts when ingest starts and stops when the sink writes
`<out>.done`. Embedded mode: `gpt4batch run` with the same input, timed whole.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.mock_upstream import MockUpstream  # noqa: E402
from tests.support.nsq_servers import run_nsqd  # noqa: E402
from tests.support.pipeline import ServiceProcs, wait_for  # noqa: E402
from tests.support.signing import TEST_BUS_SECRET as BENCH_BUS_SECRET  # noqa: E402


def write_input(path: Path, records: int, asks: int) -> None:
    with path.open("w") as fh:
        for i in range(records):
            asks_list = [{"id": f"a{k}", "content": f"q{i}.{k}"} for k in range(asks)]
            fh.write(json.dumps({"id": f"r{i}", "asks": asks_list}) + "\n")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def bench_nsq(
    work: Path, source: Path, callers: int, concurrency: int, nsqd_flags: list[str]
) -> float:
    with run_nsqd(work, None, *nsqd_flags) as nsqd, MockUpstream() as mock:
        flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", "bench"]
        out = work / "nsq-out.jsonl"
        # Ingest's published index in this run's folder, not ~/.local/state: a bench run
        # neither reads nor leaves state behind.
        state = {
            "XDG_STATE_HOME": str(work / "state"),
            "GPT4BATCH_BUS_SECRET": os.environ.get("GPT4BATCH_BUS_SECRET") or BENCH_BUS_SECRET,
        }
        with ServiceProcs(work / "nsq", flags, state) as procs:
            procs.start("sink", "sink", "-o", str(out), "--max-in-flight", "1000")
            for n in range(callers):
                procs.start(
                    f"caller{n}", "caller", "--base-url", mock.url, "--access-token", mock.token,
                    "--qps", "0", "--concurrency", str(concurrency), "--enable-download", "false",
                )  # fmt: skip
            time.sleep(1.0)  # let consumers connect
            started = time.perf_counter()
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "bench")
            done = out.with_name("nsq-out.done")
            wait_for(done.exists, 600, "the batch", procs.assert_alive)
            elapsed = time.perf_counter() - started
            pids = {name: p.pid for name, p in procs.procs.items()}
            pids.update(nsqd=nsqd.proc.pid, simulator=mock.pid)  # type: ignore[union-attr]
            print("cpu seconds: " + ", ".join(f"{n}={cpu_seconds(p):.1f}" for n, p in pids.items()))
            return elapsed


def bench_embedded(work: Path, source: Path, concurrency: int) -> float:
    with MockUpstream() as mock:
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "gpt4batch.cli", "run", "-i", str(source),
             "-o", str(work / "run-out.jsonl"), "-q", "0", "-g", str(concurrency),
             "--base-url", mock.url, "--access-token", mock.token, "--progress", "off",
             "-e", "false"],
            check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--asks", type=int, default=1)
    parser.add_argument("--callers", type=int, default=1)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--skip-embedded", action="store_true")
    parser.add_argument(
        "--nsqd-flag", action="append", default=[], help="extra nsqd flag, e.g. --mem-queue-size=0"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = work / "input.jsonl"
        write_input(source, args.records, args.asks)
        nsq_s = bench_nsq(work, source, args.callers, args.concurrency, args.nsqd_flag)
        print(
            f"nsq      records={args.records} asks={args.asks} callers={args.callers} "
            f"seconds={nsq_s:.2f} records/s={args.records / nsq_s:,.0f}"
        )
        if not args.skip_embedded:
            emb_s = bench_embedded(work, source, args.concurrency)
            print(
                f"embedded records={args.records} asks={args.asks} "
                f"seconds={emb_s:.2f} records/s={args.records / emb_s:,.0f}"
            )
    print(f"cpus={os.cpu_count()}")


if __name__ == "__main__":
    main()
