"""The downloader's handler: a DownloadJob in, a file in the folder and a DownloadResult out.

No pynsq here: the handler publishes through a `Bus` and decides its message's
fate by returning (FIN) or raising a bounded `Requeue` (transient failure). How often
and how long apart a job is retried is the subscription's `Retries` (declared in
service.py); once they are spent the bus hands the job to `give_up`, which publishes the
failed result.
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
from gpt4batch.services.downloader import metrics
from gpt4batch.services.downloader.fetch import DownloadFailed, fetch_to, file_digest, where

log = get_logger("gpt4batch.downloader")


class Downloader:
    """Fetches jobs into `download_dir` with `client`, publishing each outcome on `bus`."""

    def __init__(
        self,
        download_dir: Path,
        *,
        client: httpx.AsyncClient,
        bus: Bus,
        max_bytes: int = 100 * 1024 * 1024,
        timeout: float = 300.0,
    ) -> None:
        self.download_dir = download_dir
        self.client = client
        self.bus = bus
        self.max_bytes = max_bytes
        self.timeout = timeout

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
        started = time.perf_counter()
        try:
            size, sha = await fetch_to(
                self.client, job.url, target, max_bytes=self.max_bytes, timeout=self.timeout
            )
        except DownloadFailed as exc:
            metrics.SECONDS.observe(time.perf_counter() - started)
            if exc.transient:
                self._retry(job, delivery, exc)
            await self.failed(job, delivery, exc.reason)
            return
        metrics.SECONDS.observe(time.perf_counter() - started)
        metrics.BYTES.inc(size)
        metrics.DOWNLOADS.labels("ok").inc()
        log.info("downloaded", url=where(job.url), local=job.local, size=size)
        await self._publish(job, ok=True, size=size, sha256=sha)

    def _retry(self, job: DownloadJob, delivery: Delivery, exc: DownloadFailed) -> None:
        """A transient failure: a bounded Requeue (the subscription's `Retries` count it;
        the server's Retry-After is a floor under their backoff)."""
        metrics.DOWNLOADS.labels("retry").inc()
        log.warning(
            "download failed, will retry",
            url=where(job.url),
            local=job.local,
            attempts=delivery.attempts,
            error=exc.reason,
        )
        raise Requeue(exc.reason, bounded=True, retry_after=exc.retry_after)

    async def failed(self, job: DownloadJob, delivery: Delivery, error: str) -> None:
        """Publish the job's failed result: a final failure, or (the subscription's
        `give_up`) a transient one whose retries are spent ("gave up after N attempts: …")."""
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
