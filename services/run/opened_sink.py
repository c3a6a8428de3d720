"""The run's embedded sink as a part of its process, opened before the process is hosted."""

from __future__ import annotations

from gpt4batch.common.bus import Bus
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.service import SinkService


class OpenedSink:
    """A started `SinkService` with its batch's ledger loaded (`open`): the run prints
    the resume line, counts the budget spent and skips the records done from the ledger
    before any work. `common/service.host` registers it and closes it last (the parts
    close in reverse), after the bus stopped."""

    name = "sink"

    def __init__(self, service: SinkService, ledger: BatchLedger) -> None:
        self.service = service
        self.ledger = ledger

    @classmethod
    async def open(cls, service: SinkService, batch: str) -> OpenedSink:
        await service.start()
        return cls(service, await service.sink.ledger(batch))

    def register(self, bus: Bus) -> None:
        self.service.register(bus)

    async def start(self) -> None:
        """Nothing left to do: `open` started it."""

    async def close(self) -> None:
        await self.service.close()
