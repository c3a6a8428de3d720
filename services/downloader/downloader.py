"""The downloader's handler: a DownloadJob in, a file in the folder and a DownloadResult out.

No pynsq here: the handler publishes through a `Bus` and decides its message's
fate by returning (FIN) or raising `Requeue` (transient failure, attempts left).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.errors import Requeue
from gpt4batch.common.filenames import UnsafeName, inside
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import DownloadJob, DownloadResult
from gpt4batch.common.retry import REQUEUE
from gpt4batch.services.downloader import metrics
from gpt4batch.services.downloader.fetch import DownloadFailed, fetch_to, file_digest, where

log = get_logger("gpt4batch.downloader")

MAX_RETRY_AFTER = REQUEUE.max_retry_after


class Downloader:
    """Fetches jobs into `download_dir`; `client` and `bus` are injected (tests: mocks)."""

    def __init__(
        self,
        download_dir: Path,
        *,
        max_bytes: int = 100 * 1024 * 1024,
        timeout: float = 300.0,
        attempts: int = 5,
        client: httpx.AsyncClient | None = None,
        bus: Bus | None = None,
    ) -> None:
        self.download_dir = download_dir
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.attempts = attempts
        self.client = client
        self.bus = bus

    async def handle(self, job: DownloadJob, delivery: Delivery) -> None:
        try:
            target = inside(self.download_dir, job.local)
        except UnsafeName as exc:
            log.warning("refused download name", local=job.local, record=job.record_id)
            metrics.DOWNLOADS.labels("refused").inc()
            await self._publish(job, ok=False, error=str(exc))
            return
        if target.exists() and not target.is_file():
            metrics.DOWNLOADS.labels("refused").inc()
            await self._publish(job, ok=False, error=f"{job.local!r} exists and is not a file")
            return
        if target.exists():
            size, sha = await asyncio.to_thread(file_digest, target)
            metrics.DOWNLOADS.labels("skipped").inc()
            log.info("already downloaded", local=job.local, size=size)
            await self._publish(job, ok=True, size=size, sha256=sha)
            return
        assert self.client is not None, "Downloader.client is not set"
        started = time.perf_counter()
        try:
            size, sha = await fetch_to(
                self.client, job.url, target, max_bytes=self.max_bytes, timeout=self.timeout
            )
        except DownloadFailed as exc:
            metrics.SECONDS.observe(time.perf_counter() - started)
            await self._failed(job, delivery, exc)
            return
        metrics.SECONDS.observe(time.perf_counter() - started)
        metrics.BYTES.inc(size)
        metrics.DOWNLOADS.labels("ok").inc()
        log.info("downloaded", url=where(job.url), local=job.local, size=size)
        await self._publish(job, ok=True, size=size, sha256=sha)

    async def _failed(self, job: DownloadJob, delivery: Delivery, exc: DownloadFailed) -> None:
        if exc.transient and delivery.attempts < self.attempts:
            delay = REQUEUE.delay(delivery.attempts, exc.retry_after)
            metrics.DOWNLOADS.labels("retry").inc()
            log.warning(
                "download failed, will retry",
                url=where(job.url),
                local=job.local,
                attempts=delivery.attempts,
                error=exc.reason,
                delay=round(delay, 2),
            )
            raise Requeue(exc.reason, delay=delay)
        error = exc.reason
        if exc.transient:
            error = f"gave up after {delivery.attempts} attempts: {exc.reason}"
        metrics.DOWNLOADS.labels("failed").inc()
        log.warning("download failed", url=where(job.url), local=job.local, error=error)
        await self._publish(job, ok=False, error=error)

    async def _publish(
        self,
        job: DownloadJob,
        *,
        ok: bool,
        size: int | None = None,
        sha256: str | None = None,
        error: str | None = None,
    ) -> None:
        assert self.bus is not None, "Downloader.bus is not set"
        result = DownloadResult(
            batch=job.batch,
            record_id=job.record_id,
            ask_id=job.ask_id,
            url=job.url,
            local=job.local,
            ok=ok,
            size=size,
            sha256=sha256,
            error=error,
        )
        await self.bus.publish(self.bus.topics.downloaded, result)
