"""One retry model: the caller, the bus and the downloader agree on what is transient and
how long to wait, and a deadline is never slept past."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from gpt4batch.common import bus, retry
from gpt4batch.common.errors import RetryableError
from gpt4batch.common.upstreams import errors as upstream_errors
from gpt4batch.services.downloader import fetch


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 413, 422, 425, 429, 500, 503])
def test_caller_and_downloader_classify_statuses_alike(status: int) -> None:
    upstream = upstream_errors.from_status(status, "chat").retryable
    response = httpx.Response(status, headers={"retry-after": "7"})
    try:
        fetch._check_status(response)
    except fetch.DownloadFailed as exc:
        downloader = exc.transient
        if exc.transient:
            assert exc.retry_after == 7.0
    assert upstream == downloader == retry.is_retryable_status(status)


def test_retry_after_is_a_floor_and_is_capped() -> None:
    policy = retry.RetryPolicy(base_delay=0.01, max_delay=0.02, max_retry_after=30)
    assert policy.delay(1, 5.0) == 5.0
    assert policy.delay(1, 10_000.0) == 30
    assert 0 <= policy.delay(1, None) <= 0.01


def test_bus_requeues_use_the_same_model() -> None:
    for attempts in (1, 3, 20):
        assert 0 <= bus.backoff_delay(attempts) <= retry.REQUEUE.max_delay
    assert retry.REQUEUE.max_delay == bus.MAX_REQUEUE_DELAY


def test_a_wait_that_would_pass_the_deadline_ends_the_retries_at_once() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        raise RetryableError(429, "slow down", retry_after=5.0)

    async def go() -> None:
        await retry.with_retries(
            flaky, retry.RetryPolicy(retries=5), deadline=time.monotonic() + 1.0
        )

    started = time.monotonic()
    with pytest.raises(RetryableError):
        asyncio.run(go())
    assert calls == 1 and time.monotonic() - started < 0.5
