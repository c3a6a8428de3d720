"""Which asks this caller already answered, so a second delivery is not paid again.

An answered ask is remembered by its identity (batch, seq), with the id of the
message that carried it: the id alone is not unique, since two nsqd with the same
node id (the default is derived from the hostname) give different asks the same
id when both publish in the same millisecond. Three kinds of second delivery:

- a redelivery of the same NSQ message (nsqd restarted before our FIN reached it,
  or the FIN was lost): same (batch, seq), same message id;
- a copy of the ask under a new message id, marked `republished`: ingest,
  re-run after a kill, publishes again what the killed run sent without nsqd's
  acknowledgement. Finished without a call if this (batch, seq) was answered;
- a copy of an ask that is running here right now (a republished one; nsqd hands
  back an in-flight ask after its restart while we still run it). It waits for
  the running one and is finished without a call once that one has published
  its result.

A new message for an answered (batch, seq) that is not marked, e.g. from
`gpt4batch reconcile` after nsqd lost the result, runs.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

AskKey = tuple[str, int]
"""(batch, seq): the ask's identity."""


class AnsweredAsks:
    """Bounded memory of answered asks (batch, seq → message id), plus the asks running now."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self._answered: OrderedDict[AskKey, str] = OrderedDict()
        self._running: dict[AskKey, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._answered)

    def keys(self) -> list[tuple[str, int, str]]:
        """The remembered (batch, seq, message id), oldest first."""
        return [(batch, seq, message_id) for (batch, seq), message_id in self._answered.items()]

    async def already_answered(
        self, batch: str, seq: int, message_id: str, republished: bool = False
    ) -> bool:
        """True if this delivery needs no call: this message (or, `republished`, this ask)
        was answered here, or a copy of the ask running here has just published its result."""
        key = (batch, seq)
        while (running := self._running.get(key)) is not None:
            if await asyncio.shield(running):
                return True
        answered = self._answered.get(key)
        return answered is not None and (republished or answered == message_id)

    @asynccontextmanager
    async def running(self, batch: str, seq: int, message_id: str) -> AsyncIterator[None]:
        """Mark the ask as running for the body; answered if the body ends without error."""
        key = (batch, seq)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._running[key] = done
        answered = False
        try:
            yield
            answered = True
            if self.memory > 0:
                self._answered.pop(key, None)  # the newest answer goes last
                self._answered[key] = message_id
                if len(self._answered) > self.memory:
                    self._answered.popitem(last=False)
        finally:
            del self._running[key]
            done.set_result(answered)
