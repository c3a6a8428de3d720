"""Calls/s the caller's Pacer delivers at -q 100 and -q 20, alone on an idle loop.

    .venv/bin/python bench/pacer.py [--seconds 5]

Side by side in one run: the Pacer as it is (slots planned from the previous
planned start) and the scheduling it replaced (each start `interval` after the
previous *actual* start, so the timer's overshoot accumulated). Then the
Pacer drives real calls at -q 100 into the simulator, which judges the
largest number of calls in any 1-s window (and, run with `--qps 100`, refuses
with 429 every call past 100 in a sliding second). The same for `--pacing
window` (q calls may start together). The last line is the summary `make
bench` shows.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp

from gpt4batch.services.caller.pacer import JITTER_ALLOWANCE, Pacer, Pacing
from tests.support.mock_upstream import MockUpstream


class ActualStartPacer:
    """The scheduling before issue 11: wait until `interval` after the previous actual start."""

    def __init__(self, qps: float) -> None:
        self.interval = (1.0 + JITTER_ALLOWANCE) / qps
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self, endpoint: str = "") -> None:
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._next - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next = loop.time() + self.interval


def max_in_1s(starts: list[float]) -> int:
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= 1.0:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


async def paced_starts(pacer: Pacer | ActualStartPacer, seconds: float) -> list[float]:
    """Start times of 64 callers acquiring in a loop for `seconds` (nothing else on the loop)."""
    starts: list[float] = []
    end = time.monotonic() + seconds

    async def caller() -> None:
        while time.monotonic() < end:
            await pacer.acquire("chat")
            starts.append(time.monotonic())

    await asyncio.gather(*(caller() for _ in range(64)))
    return sorted(starts)


def rate(starts: list[float]) -> float:
    return (len(starts) - 1) / (starts[-1] - starts[0])


async def through_simulator(
    q: float, seconds: float, pacing: Pacing = "grid"
) -> tuple[float, int, int]:
    """The Pacer at `q` driving real calls (64 in flight) into the simulator, which
    refuses calls past q in a sliding second: calls/s, max in 1 s, 429s."""
    with MockUpstream("--seed", "1", "--qps", str(q)) as mock:
        pacer = Pacer(q, pacing=pacing)
        url = f"{mock.url}/v1/chat/completions"
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        async with aiohttp.ClientSession(headers=mock.headers) as http:
            end = time.monotonic() + seconds

            async def caller() -> None:
                while time.monotonic() < end:
                    await pacer.acquire("chat")
                    async with http.post(url, json=body) as resp:
                        await resp.read()

            mock.reset()
            t0 = time.monotonic()
            await asyncio.gather(*(caller() for _ in range(64)))
            elapsed = time.monotonic() - t0
        stats = mock.stats()
    calls = stats["total_calls"] - stats["rate_limited"]
    return calls / elapsed, int(stats["max_calls_in_1s"]), int(stats["rate_limited"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    summary = []
    for q in (100, 20):
        pacers = (("planned", Pacer(q)), ("actual-start", ActualStartPacer(q)),
                  ("window", Pacer(q, pacing="window")))  # fmt: skip
        for name, pacer in pacers:
            starts = asyncio.run(paced_starts(pacer, args.seconds))
            r = rate(starts)
            print(f"q={q} {name:>12}: {r:6.2f} calls/s ({r / q:.3f}·q), "
                  f"max {max_in_1s(starts)} in any 1 s")  # fmt: skip
            if name == "planned":
                summary.append(f"q={q}: {r:.1f}/s ({r / q:.3f}·q, max {max_in_1s(starts)}/1 s)")
            elif name == "actual-start":
                summary[-1] += f" vs {r:.1f}/s before"
    for pacing in ("grid", "window"):
        sim_rate, sim_max, refused = asyncio.run(through_simulator(100, args.seconds, pacing))
        print(f"q=100 {pacing} through the simulator: {sim_rate:.2f} calls/s, "
              f"max_calls_in_1s {sim_max}, 429s {refused}")  # fmt: skip
        summary.append(f"simulator at q=100 ({pacing}): {sim_rate:.1f}/s, max {sim_max} in 1 s, "
                       f"{refused} 429s")  # fmt: skip
    print("; ".join(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
