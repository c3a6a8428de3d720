"""The limiter interface, the resizable concurrency gate, and the per-process limiter."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from gpt4batch.services.caller import metrics as caller_metrics
from gpt4batch.services.caller.limits import metrics
from gpt4batch.services.caller.limits.tokens import (
    DEFAULT_COMPLETION_ESTIMATE,
    WINDOW,
    TokenLimit,
)
from gpt4batch.services.caller.pacer import Pacer, Pacing, SlotPacer

if TYPE_CHECKING:
    from gpt4batch.services.caller.settings import CallerSettings


@dataclass(frozen=True)
class LimitSettings:
    """One set of upstream limits, as every limiter takes it: calls a second (-q),
    conversations at once (-g), tokens a minute (--tpm) and how they are paced."""

    qps: float
    concurrency: int
    tpm: int = 0
    completion_estimate: int = DEFAULT_COMPLETION_ESTIMATE
    tpm_window: float = WINDOW
    #: grid or window (services/caller/pacer.py); a fleet always paces on the grid.
    pacing: Pacing = "grid"

    @classmethod
    def of(cls, settings: CallerSettings) -> LimitSettings:
        """The limits the caller's options set (or an account's, in its settings)."""
        return cls(
            settings.qps,
            settings.concurrency,
            settings.tpm,
            settings.completion_tokens_estimate,
            settings.tpm_window,
            settings.pacing,
        )


class Limiter(Protocol):
    """What the caller needs from a limiter; `acquire` is the upstream clients' `before_call`."""

    scope: str
    #: The token limit (`--tpm`), the upstream clients' `tokens` meter.
    tokens: TokenLimit

    async def start(self) -> None: ...

    async def acquire(self, endpoint: str = "") -> None:
        """Wait until one more upstream call may start."""
        ...

    def conversation(self) -> AbstractAsyncContextManager[None]:
        """Hold one of this caller's conversation places for the conversation's duration."""
        ...

    async def close(self) -> None: ...


class Gate:
    """A semaphore whose capacity can change while it is held (a caller's concurrency share).

    Shrinking never interrupts a running conversation; new ones wait until the
    number running is below the new capacity.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.running = 0
        self._changed = asyncio.Condition()

    async def resize(self, capacity: int) -> None:
        async with self._changed:
            self.capacity = capacity
            self._changed.notify_all()

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        async with self._changed:
            await self._changed.wait_for(lambda: self.running < self.capacity)
            self.running += 1
        try:
            yield
        finally:
            async with self._changed:
                self.running -= 1
                self._changed.notify_all()


class PacedLimiter:
    """`acquire` through a SlotPacer, counted in the limit metrics."""

    pacer: SlotPacer
    _skips_counted = 0

    async def acquire(self, endpoint: str = "") -> None:
        await self.pacer.acquire(endpoint)
        metrics.STARTS.inc()
        if self.pacer.skipped != self._skips_counted:
            metrics.SKIPPED.inc(self.pacer.skipped - self._skips_counted)
            self._skips_counted = self.pacer.skipped


def publish_share(qps: float, concurrency: int, tpm: float = 0.0) -> None:
    """This caller's share, in the limit metrics and the caller's own limit gauges."""
    metrics.SHARE_QPS.set(qps)
    metrics.SHARE_CONCURRENCY.set(concurrency)
    metrics.SHARE_TPM.set(tpm)
    caller_metrics.QPS_LIMIT.set(qps)
    caller_metrics.CONCURRENCY_LIMIT.set(concurrency)


class ProcessLimiter(PacedLimiter):
    """`--limit-scope process`: this process alone gets all of `qps` and `concurrency`.

    The NSQ consumer's max-in-flight already bounds the conversations, so the
    conversation gate is a no-op here. `limits.pacing` picks the grid or the sliding
    window (services/caller/pacer.py).
    """

    scope = "process"

    def __init__(self, limits: LimitSettings, group: str = "") -> None:
        self.pacer = Pacer(limits.qps, pacing=limits.pacing)
        self.concurrency = limits.concurrency
        self.tokens = TokenLimit(
            limits.tpm, completion_estimate=limits.completion_estimate, window=limits.tpm_window
        )
        metrics.LIMIT_QPS.labels(self.scope, group).set(limits.qps)
        metrics.LIMIT_CONCURRENCY.labels(self.scope, group).set(limits.concurrency)
        metrics.watch_tokens(self.scope, group, self.tokens)
        metrics.MEMBERS.set(1)
        publish_share(self.pacer.effective_qps, limits.concurrency, limits.tpm)

    async def start(self) -> None:
        return None

    @asynccontextmanager
    async def conversation(self) -> AsyncIterator[None]:
        yield

    async def close(self) -> None:
        return None
