"""Batches the gateway stopped (cancelled or expired), as this caller heard it on the bus.

The gateway publishes a `BatchStopped` on the authenticated, ephemeral topic
`…stopped#ephemeral`; every caller hears it on a channel of its own (topics.py).
An ask of a stopped batch is finished without an upstream call, as a failed
result (iErr 585 `batch_cancelled`, 586 `batch_expired`), so the batch's counts
complete and the gateway finalizes it. Calls already running finish normally.

An ask the caller had already taken when the stop came (waiting for a
conversation place or for its calls/s slot) is checked again right before its
first upstream call (`first_call_guard`): a stopped batch's ask ends there,
unpaid, with the same iErr. Once a conversation has made a call it goes on.
A caller on NSQ makes no call in its first `LISTEN_FIRST` seconds (counted
from the first ask it gets, when its subscriptions are live, while it may still
be waiting for its limit group's share): by then it has heard the stops the
gateway is announcing, so a caller started after a cancel does not pay for that
batch's queued asks. Asks of a batch no gateway stops (`unstoppable`: a `run`'s
own) do not wait.

The memory is bounded (`memory` batches, the oldest forgotten first) and expiring:
a stop is forgotten `ttl` seconds after it was last announced. The gateway
announces a stop again every few seconds while the batch has asks without a
result (services/gateway/stops.py), so a stop is remembered as long as its asks
can still arrive, and a caller that starts later learns it at the next
announcement.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from contextvars import ContextVar

from gpt4batch.common.errors import FinalError
from gpt4batch.common.messages import StopReason, stopped_error
from gpt4batch.services.caller import metrics

#: Batches remembered at most (a few hundred kB).
STOPPED_MEMORY = 10_000
#: Seconds a stop is remembered after its last announcement (announced every few seconds).
STOPPED_TTL = 600.0
#: Seconds a caller on NSQ listens for stop notices before its first call: the gateway's
#: announcement period (1 s, services/gateway/stops.py) and a margin.
LISTEN_FIRST = 1.5


class StoppedBatches:
    """Batch id → why it stopped, bounded and expiring (see the module docstring)."""

    def __init__(
        self,
        memory: int = STOPPED_MEMORY,
        ttl: float = STOPPED_TTL,
        clock: Callable[[], float] = time.monotonic,
        listen_first: float = 0.0,
        unstoppable: Collection[str] = (),
    ) -> None:
        self.memory = memory
        self.ttl = ttl
        self.listen_first = listen_first
        self._clock = clock
        self._heard_by: float | None = None
        #: Batches no gateway stops (a `run`'s own): their asks need not listen first.
        self.unstoppable = frozenset(unstoppable)
        self._stops: OrderedDict[str, tuple[StopReason, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._stops)

    def stop(self, batch: str, reason: StopReason) -> bool:
        """Remember (or refresh) that `batch` stopped; True if it was not known before."""
        now = self._clock()
        new = self._stops.pop(batch, None) is None
        self._stops[batch] = (reason, now + self.ttl)  # the newest goes last
        stops = self._stops
        # Oldest first is soonest to expire (one ttl for all): drop the expired and the excess.
        while stops and (len(stops) > self.memory or next(iter(stops.values()))[1] < now):
            stops.popitem(last=False)
        return new

    def before_first_call(self, batch: str) -> None:
        """An ask of `batch` is about to run (`before_first_call`); the first one starts
        the `listen_first` seconds: the subscriptions are live once asks arrive."""
        before_first_call(batch)
        self.until_heard()

    def until_heard(self, batch: str | None = None) -> float:
        """Seconds until this caller has heard the stops being announced (`listen_first`
        from the first time it is asked, i.e. its first ask; 0 after, and for the asks
        of an `unstoppable` batch)."""
        if batch in self.unstoppable:
            return 0.0
        now = self._clock()
        if self._heard_by is None:
            self._heard_by = now + self.listen_first
        return max(0.0, self._heard_by - now)

    def reason(self, batch: str) -> StopReason | None:
        """Why `batch` stopped, or None if it did not (or its stop has been forgotten)."""
        if not self._stops:  # the usual case: one check per ask
            return None
        found = self._stops.get(batch)
        if found is None:
            return None
        if found[1] < self._clock():
            del self._stops[batch]
            return None
        return found[0]


#: The batch of the conversation running in this task, until its first upstream call.
_UNCALLED: ContextVar[str | None] = ContextVar("gpt4batch_uncalled_batch", default=None)


def before_first_call(batch: str) -> None:
    """The conversation about to run in this task is of `batch` and has made no call."""
    _UNCALLED.set(batch)


def first_call_guard(
    acquire: Callable[[str], Awaitable[None]], stopped: StoppedBatches
) -> Callable[[str], Awaitable[None]]:
    """`acquire` (the limiter's wait for a calls/s slot), then, before a conversation's
    first call, a `FinalError` with the stop's iErr if its batch was stopped meanwhile
    (the first calls of a caller wait until it has heard the stops: `until_heard`)."""

    async def before_call(endpoint: str = "") -> None:
        batch = _UNCALLED.get()
        if batch is not None and (wait := stopped.until_heard(batch)) > 0:
            await asyncio.sleep(wait)  # before the slot: the calls/s pacing stays whole
        await acquire(endpoint)
        if batch is None:
            return
        _UNCALLED.set(None)  # its later calls go on
        reason = stopped.reason(batch)
        if reason is not None:
            metrics.STOPPED_ASKS.labels(reason).inc()
            error = stopped_error(reason)
            raise FinalError(error.code, error.message)

    return before_call
