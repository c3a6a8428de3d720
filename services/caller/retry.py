"""Retrying transient upstream failures: exponential backoff, full jitter, Retry-After."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gpt4batch.common.errors import RetryableError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries after the first; waits grow from `base_delay` to `max_delay`."""

    retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds before retry number `retry` (1-based); Retry-After is a floor."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** (retry - 1)))
        if retry_after is not None:
            return max(min(retry_after, self.max_delay * 5), backoff)
        return backoff


OnRetry = Callable[[RetryableError, int, float], None]


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> T:
    """`call()` until it succeeds, raises a final error, or the retry budget is spent."""
    retry = 0
    while True:
        try:
            return await call()
        except RetryableError as exc:
            retry += 1
            if retry > policy.retries:
                raise
            wait = policy.delay(retry, exc.retry_after)
            if on_retry is not None:
                on_retry(exc, retry, wait)
            await sleep(wait)
