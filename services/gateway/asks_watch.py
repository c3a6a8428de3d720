"""Whether anything consumes the asks topic: a gateway without callers waits forever.

Every `interval` seconds the watch counts the clients of the asks topic on
every nsqd (the bus's /stats). With none, batches stay `in_progress`: the
gateway says so once in its log (and once again when callers are back), the
`gpt4batch_gateway_asks_consumers` gauge shows 0 and `/ready` on the metrics
port answers 503 naming the topic.
"""

from __future__ import annotations

import asyncio
import contextlib

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.metrics import READINESS
from gpt4batch.services.gateway import metrics

log = get_logger("gpt4batch.gateway")


class AsksWatch:
    name = "asks-watch"

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.consumers: int | None = None  # None: not known yet
        self._topic = ""
        self._task: asyncio.Task[None] | None = None
        READINESS.append(self.readiness)

    def readiness(self) -> str | None:
        if self.consumers == 0:
            return (
                f"nothing consumes the asks topic {self._topic}: batches wait until a caller "
                "(gpt4batch caller) runs"
            )
        return None

    async def start(self) -> None:
        return None

    def register(self, bus: Bus) -> None:
        self._topic = bus.topics.asks
        self._task = asyncio.get_running_loop().create_task(self._watch(bus))

    async def _watch(self, bus: Bus) -> None:
        await asyncio.sleep(min(2.0, self.interval))  # the bus is starting
        while True:
            try:
                found = await bus.consumers(self._topic)
            except Exception as exc:  # nsqd away: keep the last answer, ask again later
                log.debug("cannot count the asks topic's consumers", error=str(exc))
                await asyncio.sleep(self.interval)
                continue
            if found is None:
                return  # this bus cannot tell (in-memory)
            self.seen(found)
            await asyncio.sleep(self.interval)

    def seen(self, found: int) -> None:
        before, self.consumers = self.consumers, found
        metrics.ASKS_CONSUMERS.set(found)
        if found == 0 and before != 0:
            log.warning(
                "nothing consumes the asks topic: batches wait until a caller runs",
                topic=self._topic,
            )
        elif found and before == 0:
            log.info("the asks topic has consumers again", topic=self._topic, consumers=found)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
