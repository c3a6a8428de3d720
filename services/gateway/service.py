"""The gateway as an app: the results consumer and the HTTP API on one bus."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.common.bus import Bus
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import NsqdAdmin
from gpt4batch.common.service import App
from gpt4batch.services.gateway.api import make_app
from gpt4batch.services.gateway.asks_watch import AsksWatch
from gpt4batch.services.gateway.batches import Batches
from gpt4batch.services.gateway.file_expiry import FileSweeper
from gpt4batch.services.gateway.listener import listener
from gpt4batch.services.gateway.serving import FleetServing
from gpt4batch.services.gateway.settings import GatewaySettings
from gpt4batch.services.gateway.store import Store
from gpt4batch.services.gateway.tenants import Tenants, warn_if_shared
from gpt4batch.services.gateway.webhooks.delivery import Webhooks
from gpt4batch.services.gateway.window import registered_concurrency
from gpt4batch.services.sink.settings import embedded_settings

log = get_logger("gpt4batch.gateway")


class GatewayService:
    """Consumes the results of its own batches on its own channel; drives the batches."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        data = Path(settings.data_dir)
        data.mkdir(parents=True, exist_ok=True)
        self.store = Store(data)
        self.webhooks = Webhooks(settings.webhooks, data / "webhooks", self._status_of)
        has_nsq = settings.nsqd_tcp_address or settings.lookupd_http_address
        admin = NsqdAdmin(
            settings.nsqd_tcp_address,
            settings.nsqd_http_address,
            settings.lookupd_http_address,
            timeout=5.0,
            service="gateway",
        )
        self.serving = serving = FleetServing(
            tuple(settings.upstream_endpoints), admin if has_nsq else None, settings.topic_prefix
        )
        self.batches = Batches(
            self.store,
            embedded_settings(out_dir=data / "ledger", max_in_flight=settings.max_in_flight),
            window=settings.window,
            max_line_bytes=settings.max_line_bytes,
            max_msg_size=settings.max_msg_size,
            on_status=self.webhooks.on_status,
            serving=serving,
        )
        self.sweeper = FileSweeper(self.store)

    def _status_of(self, batch_id: str) -> str | None:
        batch = self.store.get_batch(batch_id, None)
        return batch.status if batch is not None else None

    async def start(self) -> None:
        files, batches = self.store.unowned()
        if files or batches:
            log.warning(
                "files and batches from before keys owned them belong to no key now",
                files=files,
                batches=batches,
            )
        await self.batches.start()
        self.sweeper.start()  # files that expired while the gateway was down go first
        await self.webhooks.start()

    def register(self, bus: Bus) -> None:
        self.batches.use_bus(bus)  # asks, manifests and stop notices to the callers
        # The callers' concurrency, from their registration on nsqd.
        self.batches.window.follow(registered_concurrency(self.serving))
        self.batches.ledger.register(bus)  # its own batches' results, on its own channel
        self.batches.resume()  # drivers retry until the bus is up

    async def close(self) -> None:
        await self.sweeper.close()
        await self.batches.close()
        await self.webhooks.close()
        self.store.close()


def build(settings: GatewaySettings) -> App:
    if settings.api_key_file:
        warn_if_shared(settings.api_key_file)
    if settings.webhook_secret_file:
        warn_if_shared(settings.webhook_secret_file, "the webhook secret file")
    try:
        tenants = Tenants(settings.key_entries)
    except ValueError as exc:
        raise ConfigError(f"--api-key-file / --api-key: {exc}") from None
    service = GatewayService(settings)
    api = make_app(
        service.store,
        service.batches,
        tenants,
        max_body=settings.max_body_bytes,
        max_upload=settings.max_upload_bytes,
        max_uploads=settings.max_concurrent_uploads,
        upload_timeout=settings.upload_timeout,
        min_file_expiry=settings.min_file_expiry,
        max_requests=settings.max_requests_per_file,
    )
    server = listener(
        api,
        settings.port,
        settings.host,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_body_size=settings.max_body_bytes,
    )
    log.info("tenants", names=tenants.names)
    watch = AsksWatch(settings.consumer_check_interval)
    return App(parts=[service, watch, server])
