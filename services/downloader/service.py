"""`DownloaderService`: one pooled HTTP client and the handler subscribed on a bus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gpt4batch.common.bounded_body import ACCEPT_ENCODING
from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import DownloadJob
from gpt4batch.common.tls import client_context
from gpt4batch.common.topics import Channels
from gpt4batch.services.downloader.downloader import Downloader
from gpt4batch.services.downloader.fetch import sweep_orphan_parts
from gpt4batch.services.downloader.guard import GuardedTransport
from gpt4batch.services.downloader.settings import DownloaderSettings

log = get_logger("gpt4batch.downloader")

USER_AGENT = "gpt4batch-downloader"


def make_client(settings: DownloaderSettings) -> httpx.AsyncClient:
    """The process's client: no Authorization header ever (URLs are signed), redirects
    followed, every connection (each hop's) checked against the allowance (guard.py)."""
    limits = httpx.Limits(max_connections=settings.max_in_flight)
    transport = GuardedTransport(settings.allowance(), limits=limits, ssl_context=client_context())
    return httpx.AsyncClient(
        timeout=httpx.Timeout(settings.download_timeout),
        follow_redirects=True,
        max_redirects=5,
        transport=transport,
        trust_env=False,
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": ACCEPT_ENCODING},
    )


class DownloaderService:
    name = "downloader"

    def __init__(self, settings: DownloaderSettings) -> None:
        self.settings = settings
        self.downloader = Downloader(
            Path(settings.download_dir),
            max_bytes=settings.max_download_bytes,
            timeout=settings.download_timeout,
            attempts=settings.download_attempts,
        )

    def register(self, bus: Bus) -> None:
        self.downloader.bus = bus
        bus.subscribe(
            bus.topics.downloads,
            Channels.DOWNLOADER,
            DownloadJob,
            self.downloader.handle,
            max_in_flight=self.settings.max_in_flight,
        )

    async def start(self) -> None:
        folder = Path(self.settings.download_dir)
        folder.mkdir(parents=True, exist_ok=True)
        removed = await asyncio.to_thread(sweep_orphan_parts, folder)
        if removed:
            log.info("removed temp files of interrupted downloads", count=removed)
        self.downloader.client = make_client(self.settings)

    async def close(self) -> None:
        if self.downloader.client is not None:
            await self.downloader.client.aclose()
            self.downloader.client = None
