"""Scale-out: upstream calls/s of 1, 2 and 3 callers, upstream-bound, as a ratio to one.

    .venv/bin/python bench/scale_out.py [--callers 1,2,3] [--seconds 6]

Each caller runs `-g 50` conversations against a 0.5 s simulator with no QPS
limit (`--limit-scope process`: -g is per caller here), over two nsqd and
nsqlookupd, fed one-ask conversations directly. Calls/s are counted by the
simulator over a steady window, every caller count in this one run. The last
line is the summary `make bench` shows.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.fleet import CallRate, caller_flags, feed_asks, nsq_cluster
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs

PER_CALLER = 50
LATENCY_S = 0.5


def calls_per_second(work: Path, callers: int, seconds: float) -> float:
    ideal = callers * PER_CALLER / LATENCY_S
    with (
        nsq_cluster(work, nodes=2) as (lookupd, nodes),
        MockUpstream("--latency-ms", str(int(LATENCY_S * 1000)), "--seed", "1") as mock,
    ):
        prefix = f"scale{callers}"
        feed_asks(nodes, prefix, int(ideal * (seconds + 8)))
        rate = CallRate(mock)
        procs = [
            ServiceProcs(work / f"c{i}", caller_flags(lookupd, nodes[i % 2], prefix, mock))
            for i in range(callers)
        ]
        try:
            for i, p in enumerate(procs):
                p.__enter__()
                p.start(f"caller-{i}", "caller", "-q", "0", "-g", str(PER_CALLER),
                        "--limit-scope", "process")  # fmt: skip
            time.sleep(2.0)  # every caller's first conversations are under way
            return rate.measure(seconds)
        finally:
            for p in procs:
                p.__exit__(None, None, None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--callers", default="1,2,3")
    parser.add_argument("--seconds", type=float, default=6.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.callers.split(",")]
    rates: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        for n in counts:
            rates[n] = calls_per_second(Path(tmp) / f"n{n}", n, args.seconds)
            ideal = n * PER_CALLER / LATENCY_S
            print(f"{n} caller(s): {rates[n]:.1f} calls/s (ideal {ideal:.0f})", flush=True)
    one = rates.get(1)
    parts = [f"{n}: {rates[n]:.0f}/s" + (f" ×{rates[n] / one:.2f}" if one and n > 1 else "")
             for n in counts]  # fmt: skip
    print(f"-g {PER_CALLER} per caller, latency {LATENCY_S} s, ratio to one caller: "
          + ", ".join(parts) + " (target ≥ 1.9 for two)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
