"""`DownloaderService`: one pooled HTTP client and the handler subscribed on a bus."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from gpt4batch.common.bounded_body import ACCEPT_ENCODING
from gpt4batch.common.bus import Bus, Retries
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
        self.client: httpx.AsyncClient | None = None

    def register(self, bus: Bus) -> None:
        """Subscribe the handler; a transient failure is retried until the job's
        `--download-attempts`-th delivery, then its failed result is published."""
        settings = self.settings
        self.client = make_client(settings)
        downloader = Downloader(
            Path(settings.download_dir),
            client=self.client,
            bus=bus,
            max_bytes=settings.max_download_bytes,
            timeout=settings.download_timeout,
        )
        bus.subscribe(
            bus.topics.downloads,
            Channels.DOWNLOADER,
            DownloadJob,
            downloader.handle,
            max_in_flight=settings.max_in_flight,
            retries=Retries(max_attempts=settings.download_attempts, give_up=downloader.failed),
        )

    async def start(self) -> None:
        folder = Path(self.settings.download_dir)
        folder.mkdir(parents=True, exist_ok=True)
        removed = await asyncio.to_thread(sweep_orphan_parts, folder)
        if removed:
            log.info("removed temp files of interrupted downloads", count=removed)

    async def close(self) -> None:
        if self.client is not None:
            await self.client.aclose()
            self.client = None
