"""The gateway as an app: the results consumer and the HTTP API on one bus."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.common.bus import Bus
from gpt4batch.common.messages import DeadLetter, DownloadResult, ResultMessage, ResultPart
from gpt4batch.common.result_parts import PartAssembler, held_limit
from gpt4batch.common.service import App, HttpServer
from gpt4batch.common.topics import Channels
from gpt4batch.services.gateway.api import make_app
from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.ledger import Ledger
from gpt4batch.services.gateway.settings import GatewaySettings
from gpt4batch.services.gateway.store import Store


class GatewayService:
    """Consumes the results of its own batches on its own channel; drives the batches."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.store = Store(data)
        self.batches = Batches(
            self.store,
            Ledger(data / "ledger"),
            window=settings.window,
            max_line_bytes=settings.max_line_bytes,
            max_msg_size=settings.max_msg_size,
        )

    async def start(self) -> None:
        await self.batches.start()

    def register(self, bus: Bus) -> None:
        self.batches.bus = bus
        self.batches.ledger.bind(bus)
        mif = self.settings.max_in_flight
        bus.subscribe(
            bus.topics.results,
            Channels.GATEWAY,
            ResultMessage,
            self.batches.handle_result,
            max_in_flight=mif,
        )
        bus.subscribe(
            bus.topics.downloaded,
            Channels.GATEWAY,
            DownloadResult,
            self.batches.handle_download,
            max_in_flight=mif,
        )
        bus.subscribe(
            bus.topics.dead,
            Channels.GATEWAY,
            DeadLetter,
            self.batches.handle_dead,
            max_in_flight=mif,
        )
        # Results over one message's size arrive in pieces (common/result_parts.py).
        pieces = PartAssembler(self.batches.handle_result, max_held=held_limit(mif))
        bus.subscribe(
            bus.topics.result_parts, Channels.GATEWAY, ResultPart, pieces.handle, max_in_flight=mif
        )
        self.batches.resume()  # drivers retry until the bus is up

    async def close(self) -> None:
        await self.batches.close()
        self.store.close()


def build(settings: GatewaySettings) -> App:
    service = GatewayService(settings)
    api = make_app(service.store, service.batches, settings.api_key)
    # Slack over the file limit for the multipart envelope.
    server = HttpServer(
        api, settings.port, settings.host, max_body_size=settings.max_upload_bytes + 65536
    )
    return App(parts=[service, server])
