"""How many asks of one batch the gateway keeps published and unanswered.

A cancel (or expiry) stops what has not been published at once; what is
published but not yet taken by a caller is finished unrun by the callers
(stops.py). Either way the window bounds what a stop can still cost, so it is
kept near what the fleet runs at once: twice the callers' concurrency, within
[`FLOOR`, `CEILING`], read again every `interval` seconds. The concurrency is
the fleet's, from its membership on nsqd (services/caller/limits/membership.py:
the callers of the limit group named by the topic prefix, the default, share
the smallest `--concurrency` they were started with). `--window` fixes it
instead. Until the first read, and while no caller is registered (none runs,
or they run `--limit-scope process` or another `--limit-group`), it is
`FALLBACK`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.services.caller.limits.membership import discover_nodes, read_members, topic_for

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


def fleet_concurrency(
    group: str, nsqd_tcp: Sequence[str], lookupd_http: Sequence[str], nsqd_http: Sequence[str]
) -> ConcurrencySource:
    """The concurrency the callers of limit group `group` share, read from nsqd."""

    async def read() -> int | None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            nodes = await discover_nodes(http, nsqd_tcp, lookupd_http, nsqd_http)
            view = await read_members(http, nodes, topic_for(group))
        if view is None:
            raise ConnectionError("no nsqd answered")
        limits = [m.concurrency for m in view.members.values()]
        return min(limits) if limits else None

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
