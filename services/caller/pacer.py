"""Even pacing of upstream call starts, so the upstream never sees more than q per second.

A token bucket with a burst of q, or a fixed-window counter, lets q calls go at
once at the end of one window and q more at the start of the next: the
upstream then sees up to 2q in one second. Instead every call start waits
until `interval` after the previous start, measured when that start actually
happened (a late start never lets the next one go early). `interval` is
`(1 + jitter_allowance) / q`: the calls of any q-long run span at least
`1 s + jitter_allowance`, which absorbs the jitter between our clock and the
moment the request reaches the upstream.
"""

from __future__ import annotations

import asyncio


class Pacer:
    """`await pacer.acquire()` before each call; FIFO, shared by all of a process's calls."""

    def __init__(self, qps: float, *, jitter_allowance: float = 0.02) -> None:
        if qps < 0:
            raise ValueError("qps must be >= 0 (0 means unlimited)")
        self.qps = qps
        self.interval = (1.0 + jitter_allowance) / qps if qps else 0.0
        self._next_start = 0.0
        self._lock = asyncio.Lock()

    @property
    def effective_qps(self) -> float:
        return 1.0 / self.interval if self.interval else 0.0

    async def acquire(self, endpoint: str = "") -> None:
        if not self.interval:
            return
        async with self._lock:
            loop = asyncio.get_running_loop()
            wait = self._next_start - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            self._next_start = loop.time() + self.interval
