"""How many asks of one batch the gateway keeps published and unanswered.

A cancel (or expiry) stops what has not been published at once; what is
published but not yet taken by a caller is finished unrun by the callers
(stops.py). Either way the window bounds what a stop can still cost, so it is
kept near what the fleet runs at once: twice the callers' concurrency, within
[`FLOOR`, `CEILING`], read again every `interval` seconds. The concurrency is
the fleet's, from the callers' registration on nsqd (common/nsq/callers.py:
each process-limited caller's `--concurrency`, plus each limit group's once).
`--window` fixes it instead. Until the first read, and while no caller is
registered, it is `FALLBACK`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.callers import fleet_concurrency
from gpt4batch.services.gateway.serving import FleetServing

log = get_logger("gpt4batch.gateway")

#: The window is this many times the fleet's concurrency: the callers never wait for
#: the gateway's next publish, and a stop finds at most this many asks queued.
FACTOR = 2
FLOOR = 16
CEILING = 1000
#: The window before the fleet's concurrency is known (or when the bus cannot tell).
FALLBACK = 64

ConcurrencySource = Callable[[], Awaitable[int | None]]
"""Reads the fleet's concurrency (None: no caller registered)."""


def window_for(concurrency: int | None) -> int:
    """The window for a fleet that runs `concurrency` asks at once (None: not known)."""
    if concurrency is None:
        return FALLBACK
    return max(FLOOR, min(CEILING, FACTOR * concurrency))


def registered_concurrency(serving: FleetServing) -> ConcurrencySource:
    """The concurrency of the callers registered on nsqd (None: none registered)."""

    async def read() -> int | None:
        callers = await serving.callers()
        if callers is None:
            raise ConnectionError("no nsqd answered")  # keep the last window
        return fleet_concurrency(callers) if callers else None

    return read


class FleetWindow:
    """`size`: the window now (`fixed`, else from the fleet, see the module docstring)."""

    def __init__(self, fixed: int | None, interval: float = 5.0) -> None:
        self.fixed = fixed
        self.interval = interval
        self.size = fixed or FALLBACK
        self._task: asyncio.Task[None] | None = None

    def follow(self, source: ConcurrencySource) -> None:
        """Follow the fleet's concurrency as `source` reads it (not with `--window`)."""
        if self.fixed is None and self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._follow(source))

    async def _follow(self, source: ConcurrencySource) -> None:
        while True:
            try:
                self.seen(await source())
            except Exception as exc:  # nsqd away: keep the last size
                log.debug("cannot read the callers' concurrency", error=str(exc))
            await asyncio.sleep(self.interval)

    def seen(self, concurrency: int | None) -> None:
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
