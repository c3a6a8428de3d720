"""Which asks this caller already answered, so a second delivery is not paid again.

Two kinds of second delivery reach a caller:

- a redelivery of the same NSQ message (nsqd restarted before our FIN reached it,
  or the FIN was lost): same message id, same (batch, seq). Remembered by
  (batch, seq, message id): the id alone is not unique, since two nsqd with the
  same node id (the default is derived from the hostname) give different asks
  the same id when both publish in the same millisecond;
- a copy of an ask that is running here right now (ingest re-run after a kill
  republishes the asks nsqd had but ingest had not yet recorded; nsqd hands
  back an in-flight ask after its restart while we still run it). It waits for
  the running one and is finished without a call once that one has published
  its result.

A new message for an answered (batch, seq) that arrives later, e.g. from
`gpt4batch reconcile` after nsqd lost the result, runs: its id is new.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

AskKey = tuple[str, int]
"""(batch, seq): the ask's identity."""


class AnsweredAsks:
    """Bounded memory of answered (batch, seq, message id), plus the asks running now."""

    def __init__(self, memory: int) -> None:
        self.memory = memory
        self._answered: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self._running: dict[AskKey, asyncio.Future[bool]] = {}

    def __len__(self) -> int:
        return len(self._answered)

    def keys(self) -> list[tuple[str, int, str]]:
        """The remembered (batch, seq, message id), oldest first."""
        return list(self._answered)

    async def already_answered(self, batch: str, seq: int, message_id: str) -> bool:
        """True if this delivery needs no call: this message was answered here, or a copy of
        the ask that was running here has just published its result."""
        while (running := self._running.get((batch, seq))) is not None:
            if await asyncio.shield(running):
                return True
        return (batch, seq, message_id) in self._answered

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
                self._answered[(batch, seq, message_id)] = None
                if len(self._answered) > self.memory:
                    self._answered.popitem(last=False)
        finally:
            del self._running[key]
            done.set_result(answered)
