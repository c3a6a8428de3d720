"""Even pacing of upstream call starts on a grid of planned slots.

A token bucket with a burst of q, or a fixed-window counter, lets q calls go at
once at the end of one window and q more at the start of the next: the
upstream then sees up to 2q in one second. Instead call starts are planned on
a grid of slots `interval = (1 + jitter_allowance) / q` apart, and each slot
starts at most one call:

- Slots are planned, not measured: the next slot follows the previous
  *planned* one, so the timer's overshoot (about 1 ms per sleep) does not
  accumulate into the rate (it used to cost 10% of every QPS-bound batch).
- A late wake-up (a busy loop, a paused process) never lets a burst through:
  the next call takes the next slot of the grid, not the missed ones. In
  `strict` mode (one process) the late call itself still goes, and a window
  guard over the last ceil(q) starts holds any start that would put q + 1
  starts within `q · interval` (1 s plus the whole allowance): never more than
  q in any 1-s window at our clock, the allowance left whole for the jitter
  between our start and the upstream's stamp, and no slot lost to a late timer
  (a late start delays only the start q slots later, never the grid). Not strict (a fleet
  member, whose calls interleave with other processes'), a call that wakes
  more than a quarter of a slot late gives its slot up: the fleet's calls stay
  one per slot, at most q + 1 in any 1-s window at the members' clocks (and
  only when a late call meets 20 punctual ones), few slots lost on a busy host.

`window` pacing (one process only, `--pacing window`) drops the grid and keeps
the window guard alone: a call starts as soon as fewer than ceil(q) calls
started in the last `ceil(q) · interval` (1 s plus the allowance). The same
never-above-q-in-any-second bound, but q calls may start together: a batch of
N calls takes about (N − q) / q seconds to start instead of (N − 1) / q, one
second less, and the upstream gets q calls at once at the start of every
second instead of one every 1/q s.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Literal

#: How a process spaces its call starts: on the grid, or in a sliding 1-s window only.
Pacing = Literal["grid", "window"]

#: Window pacing: the shortest gap between two starts, as a share of the grid's interval.
WINDOW_GAP = 0.25

#: Share of the interval kept free for the jitter between our clock and the upstream's.
JITTER_ALLOWANCE = 0.01


class SlotPacer:
    """`await pacer.acquire()` before each call; FIFO, shared by all of a process's calls.

    `clock` is the time base of the grid: the loop's monotonic clock for one
    process, wall-clock time when several processes share one grid.
    """

    def __init__(
        self,
        qps: float,
        *,
        jitter_allowance: float = JITTER_ALLOWANCE,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        strict: bool = True,
        pacing: Pacing = "grid",
    ) -> None:
        if qps < 0:
            raise ValueError("qps must be >= 0 (0 means unlimited)")
        if pacing not in ("grid", "window"):
            raise ValueError(f"pacing must be grid or window, not {pacing!r}")
        if pacing == "window" and not strict:
            raise ValueError("window pacing is for one process: a fleet shares the grid")
        self.pacing = pacing
        self.jitter_allowance = jitter_allowance
        self.clock = clock or time.monotonic
        self.sleep = sleep
        self.strict = strict
        self.stride = 1
        self.offset = 0
        self.started = 0  # call starts granted
        self.skipped = 0  # slots given up because the wake-up came too late (not strict)
        self._starts: deque[float] = deque()  # the last ceil(q) starts (strict)
        self._last = -1  # index of the last slot used
        self._lock = asyncio.Lock()
        self.set_qps(qps)

    def set_qps(self, qps: float) -> None:
        self.qps = qps
        self.interval = (1.0 + self.jitter_allowance) / qps if qps else 0.0
        if self.strict:  # within the allowance, so that q + 1 starts span more than 1 s
            self.late_tolerance = min(self.interval / 2, 0.5 * self.jitter_allowance)
        else:  # a quarter slot: few slots lost on a busy machine, +1 at most at our clocks
            self.late_tolerance = self.interval / 4
        self._starts = deque(self._starts, maxlen=max(1, math.ceil(qps)))

    def _guard(self, now: float) -> float:
        """Seconds to hold a start so that no ceil(q) + 1 starts crowd into one window."""
        starts = self._starts
        if len(starts) < (starts.maxlen or 1):
            return 0.0
        return starts[0] + len(starts) * self.interval - now

    def assign(self, stride: int, offset: int) -> None:
        """Use every `stride`-th slot from `offset` (a waiter re-checks its slot on waking)."""
        if stride < 1 or not 0 <= offset < stride:
            raise ValueError(f"bad slot assignment {offset}/{stride}")
        self.stride, self.offset = stride, offset

    @property
    def effective_qps(self) -> float:
        """Calls/s this pacer grants at most (its share of the grid)."""
        return 1.0 / (self.interval * self.stride) if self.interval else 0.0

    def _next_slot(self, now: float) -> int:
        interval = self.interval
        slot = math.floor(now / interval)
        if now - slot * interval > self.late_tolerance:
            slot += 1
        slot = max(slot, self._last + 1)
        return slot + (self.offset - slot) % self.stride

    async def acquire(self, endpoint: str = "") -> None:
        if not self.interval:
            self.started += 1
            return
        async with self._lock:
            if self.pacing == "window":
                await self._window_start()
                return
            while True:
                interval = self.interval
                slot = self._next_slot(self.clock())
                planned = slot * interval
                wait = planned - self.clock()
                if wait > 0:
                    await self.sleep(wait)
                if interval != self.interval or slot % self.stride != self.offset:
                    continue  # the limit or this caller's share changed while we slept
                now = self.clock()
                if self.strict:
                    hold = self._guard(now)
                    if hold > 0:
                        await self.sleep(hold)
                        now = self.clock()
                    self._starts.append(now)
                elif now - planned > self.late_tolerance:
                    self.skipped += 1
                    continue
                self._last = slot
                self.started += 1
                return

    async def _window_start(self) -> None:
        """Start as soon as the last ceil(q) starts span the window (under the lock)."""
        while True:
            now = self.clock()
            hold = self._guard(now)
            if self._starts:
                hold = max(hold, self._starts[-1] + self.interval * WINDOW_GAP - now)
            if hold <= 0:
                break
            await self.sleep(hold)
        self._starts.append(now)
        self.started += 1


class Pacer(SlotPacer):
    """One process's pacer on the loop's monotonic clock (`--limit-scope process`)."""
