"""How many asks of one batch the gateway keeps published and unanswered.

A cancel (or expiry) stops what has not been published at once; what is
published but not yet taken by a caller is finished unrun by the callers
(stops.py). Either way the window bounds what a stop can still cost, so it is
kept near what the fleet runs at once: twice the callers' concurrency, read
from nsqd (the RDY of every client of the asks topic's caller channel: each
caller's RDY is its `--concurrency`), within [`FLOOR`, `CEILING`], read again
every `interval` seconds. `--window` fixes it instead. Until the first read
(or on a bus that cannot tell) it is `FALLBACK`.
"""

from __future__ import annotations

import asyncio
import contextlib

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.topics import Channels

log = get_logger("gpt4batch.gateway")

#: The window is this many times the fleet's concurrency: the callers never wait for
#: the gateway's next publish, and a stop finds at most this many asks queued.
FACTOR = 2
FLOOR = 16
CEILING = 1000
#: The window before the fleet's concurrency is known (or when the bus cannot tell).
FALLBACK = 64


def window_for(concurrency: int) -> int:
    """The window for a fleet that runs `concurrency` asks at once."""
    return max(FLOOR, min(CEILING, FACTOR * concurrency))


class FleetWindow:
    """`size`: the window now (`fixed`, else from the fleet, see the module docstring)."""

    def __init__(self, fixed: int | None, interval: float = 5.0) -> None:
        self.fixed = fixed
        self.interval = interval
        self.size = fixed or FALLBACK
        self._task: asyncio.Task[None] | None = None

    def register(self, bus: Bus) -> None:
        """Follow the fleet's concurrency on `bus` (nothing to do with `--window`)."""
        if self.fixed is None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow(bus))

    async def _follow(self, bus: Bus) -> None:
        while True:
            try:
                concurrency = await bus.consumer_capacity(bus.topics.asks, Channels.CALLER)
            except Exception as exc:  # nsqd away: keep the last size
                log.debug("cannot read the callers' concurrency", error=str(exc))
                concurrency = -1
            if concurrency is None:
                return  # this bus cannot tell: FALLBACK it is
            if concurrency >= 0:
                self.seen(concurrency)
            await asyncio.sleep(self.interval)

    def seen(self, concurrency: int) -> None:
        size = window_for(concurrency)
        if size != self.size:
            log.info("batch window", window=size, callers_concurrency=concurrency)
            self.size = size

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
