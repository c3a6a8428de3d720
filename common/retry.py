"""The one retry model: which failures are transient, how long to wait, when to stop.

The caller (upstream calls), the bus (requeues of failed handlers) and the
downloader (requeues of failed fetches) all wait with exponential backoff and
full jitter, honour Retry-After as a floor (capped), and treat the same HTTP
statuses as transient. A deadline, when given, is never slept past: a wait that
would end after it makes the last error final at once.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from gpt4batch.common.errors import RetryableError

T = TypeVar("T")

#: HTTP statuses worth retrying besides every 5xx.
RETRYABLE_STATUSES = frozenset({408, 425, 429})


def is_retryable_status(status: int) -> bool:
    """429, 408, 425 and every 5xx: the same request may succeed later."""
    return status >= 500 or status in RETRYABLE_STATUSES


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), else None."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class RetryPolicy:
    """`retries` more tries after the first; waits grow from `base_delay` to `max_delay`.

    A Retry-After is a floor under the backoff, itself capped at `max_retry_after`.
    """

    retries: int = 5
    base_delay: float = 1.0
    max_delay: float = 60.0
    max_retry_after: float = 300.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number `retry` (1-based)."""
        backoff = random.uniform(0, min(self.max_delay, self.base_delay * 2 ** max(0, retry - 1)))
        if retry_after is not None:
            return max(min(retry_after, self.max_retry_after), backoff)
        return backoff


#: Requeues of a message whose handler failed (bus) or whose download failed.
REQUEUE = RetryPolicy(retries=10, base_delay=1.0, max_delay=60.0, max_retry_after=600.0)

#: Publishing a paid-for result while nsqd is unreachable (bounded by time, not count).
REPUBLISH = RetryPolicy(retries=1_000_000, base_delay=0.4, max_delay=10.0)

OnRetry = Callable[[RetryableError, int, float], None]


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    on_retry: OnRetry | None = None,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    deadline: float | None = None,
) -> T:
    """`call()` until it succeeds, raises a final error, the retry budget is spent, or the
    next wait would pass `deadline` (a `time.monotonic()` value)."""
    retry = 0
    while True:
        try:
            return await call()
        except RetryableError as exc:
            retry += 1
            if retry > policy.retries:
                raise
            wait = policy.delay(retry, exc.retry_after)
            if deadline is not None and time.monotonic() + wait >= deadline:
                raise
            if on_retry is not None:
                on_retry(exc, retry, wait)
            await sleep(wait)
