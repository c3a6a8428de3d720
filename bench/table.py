"""`make bench`: every row of the speed table (issue 11), each figure beside its target.

    .venv/bin/python bench/table.py                      # this tree, about 4 minutes
    .venv/bin/python bench/table.py --base /tmp/old      # plus an older checkout, side by side

Everything is measured in this one invocation on this machine: the raw pynsq
consume ceiling in the same run as the pipeline, and with `--base DIR` (a
checkout with its own `.venv`, e.g. `git worktree add /tmp/old main`) every
row once for each tree, back to back, with the ratio. The machine is shared
and noisy: compare ratios measured together, not figures across runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import raw_nsq_consume
from bench.support import (
    ROOT,
    Procs,
    cpu_seconds,
    peak_rss_mb,
    timed_run,
    write_records,
)
from gpt4batch.common.authenticator import SECRET_ENV
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd
from tests.support.pipeline import wait_for
from tests.support.signing import bus_secret

#: Simulator flags of the QPS row: latency uniform in 0.5–1.5 s.
SLOW_UPSTREAM = ("--latency-ms", "500", "--jitter-ms", "1000")


@dataclass
class Tree:
    """One checkout being measured: its interpreter and its figures."""

    name: str
    root: Path
    figures: dict[str, str] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)

    @property
    def python(self) -> str:
        return str(self.root / ".venv" / "bin" / "python")

    fast_simulator: bool = True

    def mock(self, *args: str) -> MockUpstream:
        """The tree's simulator, on its load-generator path (`--fast`) when it has one."""
        has_fast = (self.root / "services" / "mock_upstream" / "fast.py").exists()
        if self.fast_simulator and has_fast:
            args = ("--fast", *args)
        return MockUpstream(*args, python=self.python)

    def run_cmd(self, source: Path, out: Path, *flags: str) -> list[str]:
        return [
            self.python, "-m", "gpt4batch.cli", "run", "-i", str(source), "-o", str(out),
            "--progress", "off", "-e", "false", *flags,
        ]  # fmt: skip


def note(text: str) -> None:
    print(f"  … {text}", file=sys.stderr, flush=True)


# --- rows -------------------------------------------------------------------------------


def qps_wall(tree: Tree, work: Path, records: int, q: int, g: int) -> None:
    """wall ÷ ideal of `run -g G -q Q` against a 0.5–1.5 s upstream, embedded and with -n
    (grid pacing, the default), and embedded with `--pacing window` where the tree has it."""
    source = write_records(work / "qps.jsonl", records)
    modes = ["embedded", "nsq"]
    if '"window"' in (tree.root / "services" / "caller" / "pacer.py").read_text():
        modes.append("window")  # embedded, `--pacing window` (the tree has it)
    for mode in modes:
        with tree.mock(*SLOW_UPSTREAM) as mock:
            flags = ["-q", str(q), "-g", str(g), "--base-url", mock.url]
            flags += ["--access-token", mock.token, "--batch", f"qps-{mode}"]
            if mode == "window":
                flags += ["--pacing", "window"]
            if mode == "nsq":
                with run_nsqd(work / f"qps-{tree.name}", None) as nsqd:
                    flags += ["-n", "--nsqd-tcp-address", nsqd.tcp_address]
                    run = timed_run(tree.run_cmd(source, work / f"qps-{mode}.jsonl", *flags))
            else:
                run = timed_run(tree.run_cmd(source, work / f"qps-{mode}.jsonl", *flags))
            stats = mock.stats()
        ratio = run.seconds / (stats["total_calls"] / q)
        tree.values[f"qps_{mode}"] = ratio
        tree.figures[f"qps_{mode}"] = (
            f"{ratio:.3f} ({run.seconds:.1f} s, max {stats['max_calls_in_1s']}/1 s)"
        )
        note(f"{tree.name}: qps {mode} {tree.figures[f'qps_{mode}']}")


#: Runs of each one-record measurement; the median is reported (one run on this shared
#: machine swings by 50%).
ONE_RECORD_RUNS = 3


def one_record(tree: Tree, work: Path) -> None:
    """`run` on a 1-record file against an instant upstream, embedded and with -n: the
    median of ONE_RECORD_RUNS runs each (a fresh output every time, so nothing resumes)."""
    source = write_records(work / "one.jsonl", 1)
    with tree.mock() as mock:
        base = ["-q", "0", "--base-url", mock.url, "--access-token", mock.token]
        for mode in ("embedded", "nsq"):
            seconds = []
            for attempt in range(ONE_RECORD_RUNS):
                out = work / f"one-{tree.name}-{mode}-{attempt}.jsonl"
                if mode == "nsq":
                    with run_nsqd(work / f"one-{tree.name}", None) as nsqd:
                        flags = [*base, "-n", "--nsqd-tcp-address", nsqd.tcp_address]
                        seconds.append(timed_run(tree.run_cmd(source, out, *flags)).seconds)
                else:
                    seconds.append(timed_run(tree.run_cmd(source, out, *base)).seconds)
            median = statistics.median(seconds)
            tree.values[f"one_{mode}"] = median
            tree.figures[f"one_{mode}"] = f"{median:.2f} s (median of {len(seconds)})"
    note(f"{tree.name}: one record {tree.figures['one_embedded']} / {tree.figures['one_nsq']}")


def pipeline(
    tree: Tree, work: Path, records: int, raw_rate: float, profile: Path | None = None
) -> None:
    """ingest → 1 caller → sink over nsqd, instant upstream: records/s, CPU, peak RSS.

    With `profile`, py-spy records the caller and the sink during the batch
    (collapsed stacks in `<profile>/<tree>-<service>.txt`; bench/profile_top.py reads them).
    """
    source = write_records(work / "pipeline.jsonl", records)
    root = work / f"pipeline-{tree.name}"
    with run_nsqd(root, None) as nsqd, tree.mock() as mock:
        flags = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", "bench"]
        out = root / "out.jsonl"
        with Procs(tree.python, root, flags) as procs:
            # Both trees ingest the same file as batch "bench": each needs its own ingest
            # state, or the second skips every record as already published (and times out).
            procs.env["XDG_STATE_HOME"] = str(root / "state")
            procs.start("sink", "sink", "-o", str(out), "--max-in-flight", "1000")
            procs.start(
                "caller", "caller", "--base-url", mock.url, "--access-token", mock.token,
                "--qps", "0", "--concurrency", "64", "--enable-download", "false",
            )  # fmt: skip
            time.sleep(1.0)  # let the consumers connect
            pids = {"caller": procs.procs["caller"].pid, "sink": procs.procs["sink"].pid}
            pids["simulator"] = mock.pid
            cpu0 = {name: cpu_seconds(pid) for name, pid in pids.items()}
            spies = [] if profile is None else start_py_spy(tree, profile, pids)
            started = time.perf_counter()
            procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "bench", timeout=600)
            wait_for(out.with_name("out.done").exists, 600, "the batch", procs.assert_alive)
            elapsed = time.perf_counter() - started
            cpu = {name: cpu_seconds(pid) - cpu0[name] for name, pid in pids.items()}
            rss = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            stop_py_spy(spies)
    rate = records / elapsed
    per_k = {name: seconds * 1000 / records for name, seconds in cpu.items()}
    tree.values.update(pipeline=rate, share=rate / raw_rate)
    tree.values.update({f"cpu_{name}": v for name, v in per_k.items()})
    tree.figures["pipeline"] = f"{rate:,.0f} rec/s"
    tree.figures["share"] = f"{100 * rate / raw_rate:.1f}% of {raw_rate:,.0f} msg/s"
    tree.figures["cpu"] = " / ".join(f"{per_k[n]:.2f}" for n in ("caller", "sink", "simulator"))
    tree.figures["pipeline_rss"] = " / ".join(f"{rss[n]:.0f}" for n in ("caller", "sink"))
    note(f"{tree.name}: pipeline {tree.figures['pipeline']}, cpu/1k {tree.figures['cpu']}")


def start_py_spy(tree: Tree, profile: Path, pids: dict[str, int]) -> list[subprocess.Popen[bytes]]:
    profile.mkdir(parents=True, exist_ok=True)
    spy = str(Path(sys.executable).parent / "py-spy")
    return [
        subprocess.Popen(
            [
                spy,
                "record",
                "--pid",
                str(pids[name]),
                "--rate",
                "200",
                "--format",
                "raw",
                "--output",
                str(profile / f"{tree.name}-{name}.txt"),
                "--nonblocking",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in ("caller", "sink")
    ]


def stop_py_spy(spies: list[subprocess.Popen[bytes]]) -> None:
    for spy in spies:
        spy.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    for spy in spies:
        spy.wait(30)


def run_memory(tree: Tree, work: Path, small: int, large: int) -> None:
    """Peak RSS of embedded `run` (instant upstream) at two sizes, both measured.

    `make bench` measures 10k / 40k (both past the point where the finalizer's sort
    buffer is full). A million records takes ~15 minutes here: measured once with
    `--only run_rss --run-small 100000 --run-large 1000000` (docs/benchmarks.md).
    """
    peaks = {}
    with tree.mock() as mock:
        for n in (small, large):
            source = write_records(work / f"mem-{n}.jsonl", n)
            out = work / f"mem-{tree.name}-{n}.jsonl"
            flags = ["-q", "0", "-g", "64", "--base-url", mock.url, "--access-token", mock.token]
            run = timed_run(tree.run_cmd(source, out, *flags), timeout=max(600, n / 200))
            peaks[n] = run.peak_mb
    growth = peaks[large] / peaks[small]
    tree.values.update(run_small=peaks[small], run_large=peaks[large], run_growth=growth)
    tree.figures["run_rss"] = (
        f"{peaks[small]:.0f} / {peaks[large]:.0f} MB at {small:,} / {large:,} ({growth:.2f}×)"
    )
    note(f"{tree.name}: run memory {tree.figures['run_rss']}")


def ingest_memory(tree: Tree, work: Path, small: int, large: int) -> None:
    """Peak RSS of `gpt4batch ingest` into a real nsqd at two input sizes."""
    peaks = {}
    seconds = {}
    for n in (small, large):
        source = work / f"ingest-{n}.jsonl"
        if not source.exists():
            write_records(source, n)
        root = work / f"ingest-{tree.name}-{n}"
        with run_nsqd(root, None) as nsqd:
            # Its own published-seq state: with the same batch and input, ingest would
            # skip every record an earlier measurement published.
            run = timed_run(
                [tree.python, "-m", "gpt4batch.services.ingest", "-i", str(source),
                 f"--nsqd-tcp-address={nsqd.tcp_address}", "--topic-prefix=bench",
                 "--batch=bench", "--progress=off", "--log-level=warning",
                 f"--state-dir={root / 'state'}"],
                # ingest signs what it publishes: it needs a secret (any; a tree from
                # before the bus was signed ignores it), as the pipeline's services get.
                env={**os.environ, SECRET_ENV: bus_secret()},
            )  # fmt: skip
        peaks[n], seconds[n] = run.peak_mb, run.seconds
    tree.values.update(ingest_small=peaks[small], ingest_large=peaks[large])
    tree.figures["ingest_rss"] = (
        f"{peaks[small]:.0f} / {peaks[large]:.0f} MB at {small // 1000}k / {large // 1000}k "
        f"({large / seconds[large]:,.0f} lines/s)"
    )
    note(f"{tree.name}: ingest memory {tree.figures['ingest_rss']}")


def gateway_scale(tree: Tree) -> None:
    """A Batch API file at the API's limits (50,000 lines of ~4 KB, ~200 MB) through the
    gateway with the official SDK, and the same lines through ingest → sink, in one run of
    bench/gateway_batch.py --scale (about 2 minutes): lines/s of each, the gateway's peak
    RSS (VmHWM) and the phase it peaked in."""
    script = tree.root / "bench" / "gateway_batch.py"
    if "--scale" not in script.read_text():
        tree.figures["gateway"] = "(no --scale in this tree)"
        return
    cmd = [tree.python, str(script), "--scale", "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, cwd=tree.root)
    if out.returncode != 0:
        raise RuntimeError(f"gateway_batch.py exited {out.returncode}: {out.stderr[-500:]}")
    figures = json.loads(out.stdout.strip().splitlines()[-1])
    gw, file = figures["lines_per_s"], figures["pipeline_lines_per_s"]
    tree.values.update(gateway=gw, gateway_file=file, gateway_rss=figures["peak_rss_mb"])
    tree.figures["gateway"] = (
        f"{gw:,.0f} lines/s ({figures['seconds']:.0f} s, {figures['input_mb']:.0f} MB; "
        f"gateway {figures['cpu']:.0f} CPU s)"
    )
    tree.figures["gateway_file"] = (
        f"{file:,.0f} lines/s ({figures['pipeline_seconds']:.0f} s); gateway ÷ this {gw / file:.2f}"
    )
    tree.figures["gateway_rss"] = f"{figures['peak_rss_mb']:.0f} MB (by phase: {figures['phases']})"
    note(f"{tree.name}: gateway {tree.figures['gateway']}, rss {tree.figures['gateway_rss']}")


#: Runs of each side of the token limit's cost (alternating; the medians are compared).
TPM_CPU_RUNS = 3


def tpm_cpu(tree: Tree, records: int) -> None:
    """Caller CPU per 1,000 records (bench/caller_cpu.py: no NSQ, instant upstream) with
    `--tpm` off and with a limit that never binds (every call reserved, paced, counted)."""
    script = tree.root / "bench" / "caller_cpu.py"
    if "--tpm" not in script.read_text():
        tree.figures["tpm_cpu"] = "(no --tpm in this tree)"
        return
    per_k: dict[int, list[float]] = {0: [], 10**12: []}
    for _ in range(TPM_CPU_RUNS):
        for tpm in per_k:
            cmd = [tree.python, str(script), "--records", str(records), "--tpm", str(tpm)]
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=tree.root)
            line = out.stdout.strip().splitlines()[-1]
            ms = float(line.split("cpu_ms_per_record=")[1].split()[0])
            per_k[tpm].append(ms)  # ms per record = CPU s per 1,000 records
    off, on = statistics.median(per_k[0]), statistics.median(per_k[10**12])
    tree.values["tpm_cpu"] = on / off
    tree.figures["tpm_cpu"] = f"{on / off:.3f} ({on:.3f} vs {off:.3f} s per 1,000 records)"
    note(f"{tree.name}: token limit cost {tree.figures['tpm_cpu']}")


def external(tree: Tree, script: str, key: str, timeout: float = 120.0) -> None:
    """A bench script owned elsewhere (bench/pacer.py, bench/scale_out.py): its last line."""
    path = tree.root / "bench" / script
    if not path.exists():
        tree.figures[key] = f"(no bench/{script} in this tree)"
        return
    try:
        result = subprocess.run(
            [tree.python, str(path)], capture_output=True, text=True, timeout=timeout, cwd=tree.root
        )
        lines = [line for line in result.stdout.splitlines() if line.strip()]
        tree.figures[key] = lines[-1].strip() if lines else f"(exit {result.returncode})"
    except subprocess.TimeoutExpired:
        tree.figures[key] = f"(timed out after {timeout:.0f} s)"


# --- the table ----------------------------------------------------------------------------


@dataclass
class Row:
    what: str
    key: str
    target: str
    met: Callable[[dict[str, float]], bool | None] = lambda v: None
    value: str | None = None


def rows(args: argparse.Namespace) -> list[Row]:
    return [
        Row(
            f"wall ÷ ideal, {args.qps_records:,} one-ask records, latency 0.5–1.5 s, "
            f"`run -g {args.g} -q {args.q}`, embedded",
            "qps_embedded",
            "≤ 1.03",
            lambda v: v["qps_embedded"] <= 1.03,
            value="qps_embedded",
        ),
        Row(
            "… the same with `-n`",
            "qps_nsq",
            "≤ 1.03",
            lambda v: v["qps_nsq"] <= 1.03,
            value="qps_nsq",
        ),
        Row(
            "… the same embedded, `--pacing window` (not the default)",
            "qps_window",
            "≤ 1.03",
            lambda v: v["qps_window"] <= 1.03,
            value="qps_window",
        ),
        Row(
            "calls/s delivered at `-q 100` (bench/pacer.py, i12)",
            "pacer",
            "≥ 0.98·q, never above q in any 1 s",
        ),
        Row("fleet scale-out (bench/scale_out.py, i12)", "scale_out", "(issue 12)"),
        Row(
            "fleet of 3 callers over 2 nsqd at `--tpm` 600,000, 150 s (bench/tpm_fleet.py, "
            "also `make bench-tpm`, i21)",
            "tpm_fleet",
            "max in any 60 s ≤ 1.02·T; from the 2nd minute ≥ 0.95·T; 429s ≤ 1% of calls",
        ),
        Row(
            "two accounts, one `run -n --accounts`: q 20 and 10, then T 6,000 and 3,000 per "
            "10 s (bench/accounts.py, i21)",
            "accounts",
            "each ≤ 1.02 of its q and T; together ≥ 0.95 of the sum",
        ),
        Row(
            "`run` on a 1-record file, instant upstream, embedded",
            "one_embedded",
            "≤ 0.6 s",
            lambda v: v["one_embedded"] <= 0.6,
            value="one_embedded",
        ),
        Row(
            "… the same with `-n`",
            "one_nsq",
            "≤ 1.0 s",
            lambda v: v["one_nsq"] <= 1.0,
            value="one_nsq",
        ),
        Row(
            f"end to end, {args.records:,} one-ask records, instant simulator, NSQ, 1 caller",
            "pipeline",
            "≥ 2,000 rec/s",
            lambda v: v["pipeline"] >= 2000,
            value="pipeline",
        ),
        Row(
            "the same as a share of raw pynsq consume (same run)",
            "share",
            "≥ 8%",
            lambda v: v["share"] >= 0.08,
            value="share",
        ),
        Row(
            "Batch API at its limits: 50,000 lines of ~4 KB (205 MB) through the gateway, "
            "official SDK upload → `completed` → output downloaded, 1 caller, fast simulator "
            "(bench/gateway_batch.py --scale, i22)",
            "gateway",
            "(beside the next row)",
            value="gateway",
        ),
        Row(
            "… the same 50,000 lines through ingest → sink (same run)",
            "gateway_file",
            "",
            value="gateway_file",
        ),
        Row(
            "peak RSS of the gateway over that batch (VmHWM)",
            "gateway_rss",
            "≤ 150 MB",
            lambda v: v["gateway_rss"] <= 150,
            value="gateway_rss",
        ),
        Row(
            "CPU s per 1,000 records: caller / sink / simulator",
            "cpu",
            "≤ 0.30 / ≤ 0.08 / ≤ 0.15",
            lambda v: (
                v["cpu_caller"] <= 0.30 and v["cpu_sink"] <= 0.08 and v["cpu_simulator"] <= 0.15
            ),
            value="cpu_caller",
        ),
        Row(
            "caller CPU per 1,000 records with `--tpm` (never binding) ÷ without "
            "(bench/caller_cpu.py, median of 3 each)",
            "tpm_cpu",
            "≤ 1.05",
            lambda v: v["tpm_cpu"] <= 1.05,
            value="tpm_cpu",
        ),
        Row("peak RSS (MB) of the pipeline's caller / sink", "pipeline_rss", "≤ 100 each"),
        Row(
            "peak RSS of embedded `run`, two sizes measured (1M: docs/benchmarks.md)",
            "run_rss",
            "larger ≤ 1.2 × smaller, ≤ 100 MB",
            lambda v: v["run_growth"] <= 1.2 and v["run_large"] <= 100,
            value="run_large",
        ),
        Row(
            "peak RSS of `ingest`",
            "ingest_rss",
            "flat, ≤ 80 MB",
            lambda v: v["ingest_large"] <= 80,
            value="ingest_large",
        ),
    ]


def measure(trees: list[Tree], args: argparse.Namespace, work: Path, raw_rate: float) -> None:
    """Each step for every tree back to back, so a noisy minute hits both alike."""
    steps: dict[str, Callable[[Tree], None]] = {
        "one": lambda t: one_record(t, work),
        "pipeline": lambda t: pipeline(t, work, args.records, raw_rate, args.profile),
        "qps": lambda t: qps_wall(t, work, args.qps_records, args.q, args.g),
        "run_rss": lambda t: run_memory(t, work, args.run_small, args.run_large),
        "ingest_rss": lambda t: ingest_memory(t, work, args.ingest_small, args.ingest_large),
        "tpm_cpu": lambda t: tpm_cpu(t, args.tpm_records),
        "gateway": gateway_scale,
        "pacer": lambda t: external(t, "pacer.py", "pacer"),
        "scale_out": lambda t: external(t, "scale_out.py", "scale_out"),
        "accounts": lambda t: external(t, "accounts.py", "accounts"),
        "tpm_fleet": lambda t: external(t, "tpm_fleet.py", "tpm_fleet", timeout=300.0),
    }
    for name, step in steps.items():
        if args.only and name not in args.only:
            continue
        for tree in trees:
            try:
                step(tree)
            except Exception as exc:  # one broken row must not hide the others
                tree.figures.setdefault(name, f"(failed: {type(exc).__name__}: {str(exc)[:120]})")
                note(f"{tree.name}: {name} failed: {exc}")


def print_table(trees: list[Tree], table: list[Row], seconds: float, raw_rate: float) -> None:
    head = ["what", *(t.name for t in trees)]
    if len(trees) == 2:
        head.append(f"{trees[0].name} ÷ {trees[1].name}")
    head += ["target", "met"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    for row in table:
        cells = [row.what, *(t.figures.get(row.key, "—") for t in trees)]
        if len(trees) == 2:
            a, b = (t.values.get(row.value or "") for t in trees)
            cells.append(f"{a / b:.2f}×" if a and b else "")
        now = trees[0].values
        try:
            met = row.met(now)
        except KeyError:
            met = None
        cells += [row.target, {True: "yes", False: "**no**", None: ""}[met]]
        print("| " + " | ".join(cells) + " |")
    print()
    print(
        f"Raw pynsq consume (same run): {raw_rate:,.0f} msg/s. "
        f"Machine: {platform.machine()}, {_cpus()} CPUs, Python {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; table took {seconds:.0f} s."
    )


def _cpus() -> int:
    return len(os.sched_getaffinity(0))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=Path, help="an older checkout (with .venv) to compare")
    parser.add_argument("--records", type=int, default=20_000, help="pipeline row records")
    parser.add_argument("--qps-records", type=int, default=3000)
    parser.add_argument("-q", type=int, default=100)
    parser.add_argument("-g", type=int, default=200)
    parser.add_argument("--run-small", type=int, default=10_000)
    parser.add_argument("--run-large", type=int, default=40_000)
    parser.add_argument("--ingest-small", type=int, default=100_000)
    parser.add_argument("--ingest-large", type=int, default=1_000_000)
    parser.add_argument("--raw-messages", type=int, default=100_000)
    parser.add_argument("--tpm-records", type=int, default=10_000, help="token limit cost row")
    parser.add_argument("--profile", type=Path, help="py-spy the pipeline's caller and sink")
    parser.add_argument(
        "--tornado-simulator",
        action="store_true",
        help="measure against the full (tornado) simulator instead of its --fast path",
    )
    parser.add_argument("--only", nargs="*", help="measure only these steps (one, pipeline, …)")
    args = parser.parse_args()
    trees = [Tree("now", ROOT)]
    if args.base is not None:
        trees.append(Tree("base", args.base.resolve()))
    for tree in trees:
        tree.fast_simulator = not args.tornado_simulator
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-table-") as tmp:
        work = Path(tmp)
        # ingest remembers what it published per (batch, input) under XDG_STATE_HOME and
        # skips it on a re-run: every measurement starts from a fresh state folder.
        os.environ["XDG_STATE_HOME"] = str(work / "state")
        raw_rate = raw_nsq_consume.measure(args.raw_messages)
        note(f"raw pynsq consume {raw_rate:,.0f} msg/s")
        measure(trees, args, work, raw_rate)
    print_table(trees, rows(args), time.perf_counter() - started, raw_rate)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
