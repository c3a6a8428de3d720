"""An append-only file whose writes are batched and fsynced before anyone is told "done".

Callers `submit()` a line and await the returned future; a flusher writes every
pending line in one `os.write` loop, fsyncs (in a thread, so the event loop
keeps receiving messages) and only then resolves the futures. This is what lets
the sink FIN a message only once its line is on disk, at a few fsyncs per
second instead of one per message (like nsq_to_file's file_logger).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from pathlib import Path

from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.metrics import FSYNC_SECONDS

log = get_logger("gpt4batch.sink")

Fsync = Callable[[int], None]


class SyncedAppender:
    """Appends lines to `path`, flushing every `every` lines or `interval` seconds."""

    def __init__(
        self, path: Path, *, every: int = 500, interval: float = 0.05, fsync: Fsync = os.fsync
    ) -> None:
        self.path = path
        self.every = every
        self.interval = interval
        self._fsync = fsync
        self._fd: int | None = None
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._due = False

    def _open(self) -> int:
        if self._fd is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            created = not self.path.exists()
            self._fd = os.open(
                self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666
            )  # umask applies
            if created:  # make the new directory entry durable too
                dir_fd = os.open(self.path.parent, os.O_RDONLY)
                try:
                    self._fsync(dir_fd)
                finally:
                    os.close(dir_fd)
        return self._fd

    def submit(self, line: bytes) -> asyncio.Future[None]:
        """Queue one line (ending in a newline); the future resolves once it is fsynced."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        self._pending.append((line, fut))
        if len(self._pending) >= self.every:
            self._kick()
        elif self._timer is None:
            self._timer = loop.call_later(self.interval, self._kick)
        return fut

    def write_now(self, data: bytes) -> asyncio.Future[None]:
        """Queue `data` (whole lines) and flush at once: for a caller that gathered a group
        itself (group commit). The future resolves once `data` is fsynced."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((data, fut))
        self._kick()
        return fut

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = True
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def _flush_loop(self) -> None:
        while self._due and self._pending:
            self._due = False
            batch, self._pending = self._pending, []
            try:
                await asyncio.to_thread(self._write, b"".join(line for line, _ in batch))
            except Exception as exc:
                log.error("write failed", path=str(self.path), lines=len(batch), error=str(exc))
                for _, fut in batch:
                    if not fut.done():
                        fut.set_exception(exc)
            else:
                for _, fut in batch:
                    if not fut.done():
                        fut.set_result(None)
            if len(self._pending) >= self.every:
                self._due = True
            elif self._pending and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.interval, self._kick)

    def _write(self, data: bytes) -> None:
        """Runs in a thread: write all of `data`, fsync; on failure cut the file back."""
        fd = self._open()
        start = os.lseek(fd, 0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            began = time.perf_counter()
            self._fsync(fd)
            FSYNC_SECONDS.observe(time.perf_counter() - began)
        except BaseException:
            try:  # keep the file valid JSONL: no half-written lines left behind
                os.ftruncate(fd, start)
            except OSError as exc:
                log.error("cannot truncate after failed write", path=str(self.path), error=str(exc))
            raise

    async def close(self) -> None:
        """Write whatever is pending, then close the file."""
        if self._pending:
            self._kick()
        while self._flusher is not None and not self._flusher.done():
            await self._flusher
            if self._pending:
                self._kick()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
