"""Chaos run: one batch through real nsqd and every service as a process, with upstream
faults, kill -9 of caller, downloader and sink at random points, a graceful nsqd restart,
and kill -9 of ingest followed by its re-run. Used by tests/e2e/test_chaos.py (bounded)
and `make chaos` (`python -m tests.support.chaos --records 2000`).

At the end: every id exactly once (in input order), every planned file present and
matching its row (size, sha256), no partial file under a final name, `.done` only at the
true end, and the number of asks paid twice (from the simulator's /stats).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.services.ingest.reader import file_sha256
from gpt4batch.services.sink.ledger import read_ledger
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import free_ports_apart, run_nsqd
from tests.support.pipeline import ServiceProcs, read_jsonl
from tests.support.signing import TEST_BUS_SECRET

#: Both nsqd of `--twin-nsqd` get this node id (the one two nsqd on one host reported).
TWIN_NODE_ID = ("--node-id=617",)


@dataclass
class ChaosReport:
    seed: int
    records: int
    seconds: float = 0.0
    events: list[str] = field(default_factory=list)
    ok: int = 0
    failed: int = 0
    files_planned: int = 0
    files_fetched: int = 0
    files_failed: int = 0
    orphan_temp_files: int = 0
    chat_calls: int = 0
    faults: int = 0
    asks_answered: int = 0
    paid_twice: int = 0
    problems: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"chaos seed={self.seed} records={self.records} seconds={self.seconds:.0f} "
            f"ok={self.ok} failed={self.failed} files planned={self.files_planned} "
            f"fetched={self.files_fetched} failed={self.files_failed} "
            f"orphan_temp_files={self.orphan_temp_files} chat_calls={self.chat_calls} "
            f"faults={self.faults} asks_answered={self.asks_answered} "
            f"paid_twice={self.paid_twice}\n  events: {'; '.join(self.events)}"
            + (f"\n  PROBLEMS: {self.problems}" if self.problems else "")
        )


def published(stats: dict, topic: str) -> int:
    """Messages nsqd accepted on `topic` so far."""
    return sum(t["message_count"] for t in stats.get("topics") or [] if t["topic_name"] == topic)


def make_input(path: Path, n: int, rng: random.Random) -> None:
    with path.open("w") as fh:
        for i in range(n):
            kind = rng.random()
            if kind < 0.3:
                asks = [{"id": "a", "content": f"draw picture {i}"}]
            elif kind < 0.5:
                asks = [{"id": "a", "content": f"q{i}"}, {"id": "b", "content": "and more"}]
            else:
                asks = [{"id": "a", "content": f"q{i}"}]
            fh.write(json.dumps({"id": f"c{i}", "asks": asks}) + "\n")


def run_chaos(
    workdir: Path,
    records: int,
    seed: int,
    timeout: float = 600,
    *,
    kills: bool = True,
    only: set[str] | None = None,
    services_first: bool = False,
    twin_nsqd: bool = False,
) -> ChaosReport:
    """One chaos run; `kills=False` is the calm baseline (faults only, nothing killed),
    `only` limits the events to some of ingest, caller, downloader, sink, nsqd;
    `services_first` starts every service before nsqd, whose HTTP port is then not its
    TCP port + 1 (given to them as --nsqd-http-address); `twin_nsqd` runs a second nsqd
    with the same --node-id as the first (the default node id comes from the hostname),
    every process on both: both get asks at the same moments, so message ids collide."""
    if not kills:
        only = set()
    rng = random.Random(seed)
    report = ChaosReport(seed=seed, records=records)
    started = time.monotonic()
    source = workdir / "in.jsonl"
    make_input(source, records, rng)
    out, downloads = workdir / "chaos.jsonl", workdir / "dl"
    done_path = out.with_name("chaos.done")
    ports = free_ports_apart() if services_first else None  # else N, N + 1 (nsqd's default)
    nsqd_args = ("--mem-queue-size=0", "--msg-timeout=4s", *(TWIN_NODE_ID if twin_nsqd else ()))
    twin_nsqd_running = (
        run_nsqd(workdir, None, *nsqd_args, name="nsqd-twin") if twin_nsqd else nullcontext()
    )
    with (
        run_nsqd(workdir, None, *nsqd_args, ports=ports, started=not services_first) as nsqd,
        twin_nsqd_running as twin,
    ):
        nodes = [nsqd] if twin is None else [nsqd, twin]
        flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", f"chaos{seed}",
                 "--touch-interval", "1", "--shutdown-grace", "3"]  # fmt: skip
        if services_first:
            flags += ["--nsqd-http-address", nsqd.http_address]
        if twin is not None:
            flags += ["--nsqd-tcp-address", twin.tcp_address]
            report.events.append(f"two nsqd sharing {TWIN_NODE_ID[0]}")
        sim_args = ["--seed", str(seed), "--latency-ms", "15", "--jitter-ms", "15",
                    "--fault-5xx", "0.1", "--fault-drop", "0.04", "--fault-bad-json", "0.03",
                    "--fault-truncate", "0.03"]  # fmt: skip
        state = {
            "XDG_STATE_HOME": str(workdir / "state"),  # ingest's index: this run's own
            "GPT4BATCH_BUS_SECRET": os.environ.get("GPT4BATCH_BUS_SECRET") or TEST_BUS_SECRET,
        }
        with MockUpstream(*sim_args) as sim, ServiceProcs(workdir, flags, state) as procs:
            caller = ["--base-url", sim.url, "--access-token", sim.token, "--qps", "0",
                      "--concurrency", "30", "--retry-base-delay", "0.05",
                      "--retries", "6"]  # fmt: skip
            services = {
                "sink": ("sink", "-o", str(out), "--fsync-interval-ms", "20"),
                "downloader": (
                    "downloader",
                    "--download-dir",
                    str(downloads),
                    *sim.download_allowance,
                ),
                "caller": ("caller", *caller),
            }
            generation = {name: 0 for name in services}

            def start(name: str) -> None:
                generation[name] += 1
                procs.start(f"{name}{generation[name]}", *services[name])

            def kill(name: str) -> None:
                procs.kill(f"{name}{generation[name]}")
                start(name)

            for name in services:
                start(name)
            if services_first:
                time.sleep(rng.uniform(1, 5))  # the services wait for nsqd, none exits
                procs.assert_alive()
                nsqd.start()
                report.events.append("services started before nsqd (HTTP port not TCP + 1)")
            # ingest: kill -9 at a random moment, then run it again to the end
            ingest_cmd = procs.command("ingest", "-i", str(source), "--batch", "chaos",
                                       "--publish-batch-size", "20")  # fmt: skip
            proc = subprocess.Popen(ingest_cmd, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, env=procs.env)  # fmt: skip
            kill_at = int(records * rng.uniform(0.1, 0.6))
            if only is not None and "ingest" not in only:
                kill_at = records + 1
            asks = f"chaos{seed}.asks"
            until = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < until:
                if sum(published(node.stats(asks), asks) for node in nodes) >= kill_at:
                    break
                time.sleep(0.01)
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                report.events.append(f"ingest killed -9 after {kill_at} asks published")
            else:
                report.events.append("ingest had finished before its kill")
            proc.wait(10)
            procs.run_once("ingest-again", "ingest", "-i", str(source), "--batch", "chaos",
                           timeout=120)  # fmt: skip
            report.events.append("ingest re-run")
            plan = sorted(
                [(rng.uniform(0.1, 0.8), n) for n in ("caller", "downloader", "sink", "nsqd")]
            )
            plan = [(at, n) for at, n in plan if only is None or n in only]
            deadline = time.monotonic() + timeout
            while not done_path.exists():
                if time.monotonic() > deadline:
                    report.problems.append("no .done before the timeout")
                    break
                procs.assert_alive()
                try:
                    state = read_ledger(out)
                except (FileNotFoundError, ValueError):
                    time.sleep(0.2)
                    continue
                progress = state.counts.done / records
                while plan and progress >= plan[0][0]:
                    _, what = plan.pop(0)
                    if what == "nsqd":
                        nsqd.stop()  # graceful: SIGTERM
                        nsqd.start()
                        report.events.append(f"nsqd restarted gracefully at {progress:.0%}")
                    else:
                        kill(what)
                        report.events.append(f"{what} killed -9 at {progress:.0%}")
                if done_path.exists():
                    break
                time.sleep(0.2)
            if done_path.exists():  # `.done` only at the true end
                state = read_ledger(out)
                if not state.records_complete or state.pending_downloads():
                    report.problems.append(f".done while incomplete: {state.counts}")
            stats = sim.stats()
    report.seconds = time.monotonic() - started
    check(report, out, downloads, records, stats)
    return report


def check(report: ChaosReport, out: Path, downloads: Path, n: int, stats: dict) -> None:
    if not out.exists():
        report.problems.append("no output file")
        return
    lines = read_jsonl(out)
    ids = [r.get("id") for r in lines]
    if ids != [f"c{i}" for i in range(n)]:
        report.problems.append(f"ids not exactly once in input order ({len(ids)} lines)")
    report.ok = sum(1 for r in lines if r.get("iErr") is None)
    report.failed = len(lines) - report.ok
    report.asks_answered = sum(len(r.get("answers") or []) for r in lines)
    rows: dict[str, dict] = {}
    for row in read_jsonl(out.with_name("chaos.downloads.jsonl")):
        if row["local"] not in rows or row["ok"]:
            rows[row["local"]] = row
    planned = [s["local"] for r in lines for a in r.get("answers") or []
               for s in a.get("spec_downloads") or []]  # fmt: skip
    report.files_planned = len(planned)
    for local in planned:
        row = rows.get(local)
        if row is None:
            report.problems.append(f"planned file without a row: {local}")
            continue
        if row["ok"]:
            report.files_fetched += 1
            path = downloads / local
            if not path.is_file() or path.stat().st_size != row["size"]:
                report.problems.append(f"file missing or wrong size: {local}")
            elif file_sha256(path) != row["sha256"]:
                report.problems.append(f"file does not match its sha256: {local}")
        else:
            report.files_failed += 1
    report.orphan_temp_files = len([p for p in downloads.glob(".*.part-*")])
    chat = ("all-tools", "gizmos")
    report.chat_calls = sum(v for k, v in stats.get("calls", {}).items() if k in chat)
    report.faults = sum(v for k, v in stats.get("faulted_calls", {}).items() if k in chat)
    # Every conversation call not faulted was paid, and should be exactly one answer in the
    # output; the rest were paid twice (asks a killed caller had in flight, redeliveries).
    report.paid_twice = max(0, report.chat_calls - report.faults - report.asks_answered)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.chaos")
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--calm", action="store_true", help="faults only, nothing killed")
    parser.add_argument("--only", default=None, help="comma list of events to keep")
    parser.add_argument(
        "--services-first", action="store_true", help="start every service before nsqd"
    )
    parser.add_argument(
        "--twin-nsqd", action="store_true", help="a second nsqd with the first's --node-id"
    )
    parser.add_argument(
        "--all-cases",
        action="store_true",
        help="issue 19: the default case, then --services-first, then --twin-nsqd (same "
        "records and seed; each in its own folder under --workdir); a summary line per case",
    )
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1 << 30)
    print(f"chaos: seed {seed}", flush=True)
    workdir = Path(args.workdir or f"/tmp/gpt4batch-chaos-{seed}")
    if workdir.exists() and any(workdir.iterdir()):
        # A rerun of a seed must start from nothing: an earlier run's output would be resumed.
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    if args.all_cases:
        cases = CASES
    else:
        chosen = {"services_first": args.services_first, "twin_nsqd": args.twin_nsqd}
        name = "+".join(k.replace("_", "-") for k, on in chosen.items() if on) or "default"
        cases = {name: chosen}
    reports: dict[str, ChaosReport] = {}
    for name, flags in cases.items():
        folder = workdir / name if args.all_cases else workdir
        folder.mkdir(exist_ok=True)
        print(f"chaos: case {name}", flush=True)
        report = reports[name] = run_chaos(
            folder,
            args.records,
            seed,
            args.timeout,
            kills=not args.calm,
            only=only,
            services_first=flags.get("services_first", False),
            twin_nsqd=flags.get("twin_nsqd", False),
        )
        print(report.summary(), flush=True)
    for name, report in reports.items():
        print(case_line(name, report))
    return 1 if any(report.problems for report in reports.values()) else 0


#: `--all-cases`, in order: each case's run_chaos flags (issue 19's two cases after the default).
CASES: dict[str, dict[str, bool]] = {
    "default": {},
    "services-first": {"services_first": True},
    "twin-nsqd": {"twin_nsqd": True},
}


def case_line(name: str, report: ChaosReport) -> str:
    """One line per case, after all of them: the figures the closing notes quote."""
    verdict = f"PROBLEMS {report.problems}" if report.problems else "ok"
    return (
        f"chaos case {name}: seed={report.seed} records={report.records} ok={report.ok} "
        f"failed={report.failed} files={report.files_fetched}/{report.files_planned} "
        f"paid_twice={report.paid_twice} seconds={report.seconds:.0f}: {verdict}"
    )


if __name__ == "__main__":
    sys.exit(main())
