"""Publish in MPUB chunks with a few chunks outstanding, so validation overlaps nsqd's work.

One chunk at a time would leave the process idle for every round trip; an
unbounded number would hold the whole input in memory. `max_outstanding`
chunks in flight keeps both the pipe full and memory bounded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable

from gpt4batch.common.bus import Bus


class ChunkedPublisher:
    """Buffers bodies per topic and publishes each full buffer with `publish_many`."""

    def __init__(
        self,
        bus: Bus,
        *,
        chunk_size: int = 500,
        max_outstanding: int = 4,
        on_acked: Callable[[list[int]], Awaitable[None]] | None = None,
        on_sending: Callable[[list[int]], Awaitable[None]] | None = None,
    ) -> None:
        if chunk_size < 1 or max_outstanding < 1:
            raise ValueError("chunk_size and max_outstanding must be at least 1")
        self.bus = bus
        self.chunk_size = chunk_size
        self.acked: Counter[str] = Counter()
        """Messages per topic that the bus has acknowledged."""
        self._buffers: dict[str, list[bytes]] = {}
        self._seqs: dict[str, list[int]] = {}
        self._on_acked = on_acked
        """Told the seqs of each chunk nsqd acknowledged (ingest's published index)."""
        self._on_sending = on_sending
        """Told the seqs of each chunk before it is sent (the index, written ahead)."""
        self._slots = asyncio.Semaphore(max_outstanding)
        self._pending: set[asyncio.Task[None]] = set()
        self._failure: BaseException | None = None

    async def add(self, topic: str, body: bytes, seq: int | None = None) -> None:
        """Queue one body; publishes the topic's buffer once it holds a full chunk."""
        buffer = self._buffers.setdefault(topic, [])
        buffer.append(body)
        if seq is not None:
            self._seqs.setdefault(topic, []).append(seq)
        if len(buffer) >= self.chunk_size:
            await self.flush(topic)

    async def flush(self, topic: str) -> None:
        """Start publishing what is buffered for `topic` (waits for a free slot)."""
        bodies = self._buffers.pop(topic, None)
        seqs = self._seqs.pop(topic, [])
        if not bodies:
            return
        await self._slots.acquire()
        self._raise_failure()
        task = asyncio.get_running_loop().create_task(self._send(topic, bodies, seqs))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        # Let the task write its MPUB now, while the caller validates the next chunk.
        await asyncio.sleep(0)

    async def drain(self) -> None:
        """Publish every buffer and wait until nsqd acknowledged all of it."""
        for topic in list(self._buffers):
            await self.flush(topic)
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        self._raise_failure()

    async def abort(self) -> None:
        """Cancel publishes still in flight (after an error)."""
        for task in list(self._pending):
            task.cancel()
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def _send(self, topic: str, bodies: list[bytes], seqs: list[int]) -> None:
        try:
            if self._on_sending is not None:
                await self._on_sending(seqs)
            await self.bus.publish_many(topic, bodies)
            self.acked[topic] += len(bodies)
            if self._on_acked is not None:
                await self._on_acked(seqs)
        except BaseException as exc:
            if self._failure is None:
                self._failure = exc
            raise
        finally:
            self._slots.release()

    def _raise_failure(self) -> None:
        if self._failure is not None:
            raise self._failure
