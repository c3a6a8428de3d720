"""Where the wall time of a QPS-bound `run` goes: start-up, pacing, the last calls, finish.

    .venv/bin/python bench/qps_wall.py [--records 3000] [-q 100] [-g 200] [-n]
        [--pacing grid|window] [--base DIR]

Runs `gpt4batch run -g G -q Q` on one-ask records against the simulator (latency
0.5–1.5 s, like the qps row of bench/table.py) and polls the simulator's /stats
every 20 ms while it runs, which splits the wall time into

- start-up: process start → the first upstream call,
- pacing: the first call → the last call's start (the limiter's span),
- last calls: the last start → no call in flight (the slowest of the last ones),
- finish: no call in flight → the process has exited,

each to ±20 ms. With `--base DIR` (a checkout with its own .venv) the same run
follows with that tree's interpreter, side by side.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx

from bench.support import ROOT, write_records
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd

SLOW_UPSTREAM = ("--latency-ms", "500", "--jitter-ms", "1000")


class StatsPoller(threading.Thread):
    """Reads /stats every `period` s; remembers when calls first started, all started, drained."""

    def __init__(self, url: str, total: int, period: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.url, self.total, self.period = url, total, period
        self.first: float | None = None
        self.all_started: float | None = None
        self.drained: float | None = None
        self.stop = threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=5) as http:
            while not self.stop.is_set():
                stats = http.get(f"{self.url}/stats").json()
                now = time.perf_counter()
                calls = stats["total_calls"]
                if calls and self.first is None:
                    self.first = now
                if calls >= self.total and self.all_started is None:
                    self.all_started = now
                if self.all_started is not None and not stats["in_flight"]:
                    self.drained = now
                    return
                time.sleep(self.period)


def measure(python: str, records: int, q: int, g: int, nsq: bool, extra: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        source = write_records(work / "in.jsonl", records)
        with MockUpstream("--fast", *SLOW_UPSTREAM, python=python) as mock:
            cmd = [python, "-m", "gpt4batch.cli", "run", "-i", str(source)]
            cmd += ["-o", str(work / "out.jsonl"), "--progress", "off", "-e", "false"]
            cmd += ["-q", str(q), "-g", str(g), "--base-url", mock.url]
            cmd += ["--access-token", mock.token, "--batch", "qps", *extra]
            poller = StatsPoller(mock.url, records)
            if nsq:
                with run_nsqd(work, None) as nsqd:
                    cmd += ["-n", "--nsqd-tcp-address", nsqd.tcp_address]
                    seconds, start = _run(cmd, poller)
            else:
                seconds, start = _run(cmd, poller)
            stats = mock.stats()
    first, started, drained = poller.first, poller.all_started, poller.drained
    assert first is not None and started is not None and drained is not None, "poller missed"
    ideal = stats["total_calls"] / q
    return {
        "wall": seconds,
        "ratio": seconds / ideal,
        "startup": first - start,
        "pacing": started - first,
        "last_calls": drained - started,
        "finish": start + seconds - drained,
        "max_in_1s": stats["max_calls_in_1s"],
        "rate_limited": stats["rate_limited"],
        "calls": stats["total_calls"],
    }


def _run(cmd: list[str], poller: StatsPoller) -> tuple[float, float]:
    start = time.perf_counter()
    poller.start()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - start
    poller.stop.set()
    poller.join(5)
    if done.returncode != 0:
        raise RuntimeError(f"run exited {done.returncode}: {done.stderr[-2000:]}")
    return seconds, start


def line(name: str, r: dict) -> str:
    return (
        f"{name:>24}: {r['ratio']:.3f} ({r['wall']:.2f} s; start-up {r['startup']:.2f}, "
        f"pacing {r['pacing']:.2f}, last calls {r['last_calls']:.2f}, finish {r['finish']:.2f}; "
        f"max {r['max_in_1s']}/1 s, 429s {r['rate_limited']}, calls {r['calls']})"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("-q", type=int, default=100)
    parser.add_argument("-g", type=int, default=200)
    parser.add_argument("-n", action="store_true", help="through nsqd (run -n)")
    parser.add_argument("--pacing", choices=["grid", "window"], default=None)
    parser.add_argument("--base", type=Path, default=None, help="another checkout, side by side")
    args = parser.parse_args()
    extra = ["--pacing", args.pacing] if args.pacing else []
    trees = [("now", ROOT, extra)]
    if args.base:
        trees.append(("base", args.base, []))
    for name, root, flags in trees:
        python = str(root / ".venv" / "bin" / "python")
        result = measure(python, args.records, args.q, args.g, args.n, flags)
        print(line(f"{name}{' -n' if args.n else ''} {args.pacing or ''}".strip(), result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
