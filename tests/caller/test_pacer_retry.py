"""QPS pacing and the retry policy, without NSQ or HTTP."""

from __future__ import annotations

import asyncio

import pytest

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.retry import RetryPolicy, with_retries
from gpt4batch.services.caller.pacer import Pacer


def max_in_any_window(starts: list[float], window: float = 1.0) -> int:
    starts = sorted(starts)
    best, lo = 0, 0
    for hi, t in enumerate(starts):
        while t - starts[lo] >= window:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def test_pacer_never_lets_more_than_q_start_in_any_second() -> None:
    async def scenario() -> list[float]:
        pacer = Pacer(qps=40)
        loop = asyncio.get_running_loop()
        starts: list[float] = []

        async def call() -> None:
            await pacer.acquire("chat")
            starts.append(loop.time())

        # 100 concurrent callers all wanting to go at once (a burst a bucket would allow).
        await asyncio.gather(*(call() for _ in range(100)))
        return starts

    starts = asyncio.run(scenario())
    starts.sort()
    # q + 1 starts span 1 s plus the whole jitter allowance (left for the network).
    window = 40 * Pacer(40).interval
    assert min(b - a for a, b in zip(starts, starts[40:], strict=False)) >= window - 1e-3
    # No burst: never three starts within one interval (a late start plus the next slot).
    assert min(b - a for a, b in zip(starts, starts[2:], strict=False)) > Pacer(40).interval / 2
    assert max_in_any_window(starts) <= 40


def test_pacer_zero_means_unlimited() -> None:
    async def scenario() -> None:
        pacer = Pacer(qps=0)
        await asyncio.wait_for(asyncio.gather(*(pacer.acquire() for _ in range(1000))), 1)

    asyncio.run(scenario())


def test_window_counter_helper_counts_correctly() -> None:
    assert max_in_any_window([0, 0.5, 0.99, 1.0, 1.5]) == 3
    assert max_in_any_window([]) == 0


class Flaky:
    def __init__(self, failures: list[Exception]) -> None:
        self.failures = failures
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def run_with(policy: RetryPolicy, call: Flaky) -> tuple[object, list[float]]:
    waits: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        waits.append(seconds)

    async def go() -> object:
        return await with_retries(call, policy, sleep=fake_sleep)

    try:
        return asyncio.run(go()), waits
    except Exception as exc:
        return exc, waits


def test_transient_errors_are_retried_until_success() -> None:
    call = Flaky([RetryableError(503, "busy"), RetryableError(598, "timeout")])
    result, waits = run_with(RetryPolicy(retries=3, base_delay=1, max_delay=10), call)
    assert result == "ok"
    assert call.calls == 3
    assert len(waits) == 2
    assert all(0 <= w <= 2 for w in waits)


def test_retry_after_is_honoured_as_a_floor() -> None:
    call = Flaky([RetryableError(429, "slow down", retry_after=7.5)])
    result, waits = run_with(RetryPolicy(retries=3, base_delay=0.01), call)
    assert result == "ok"
    assert waits == [7.5]


def test_budget_spent_raises_the_last_transient_error() -> None:
    call = Flaky([RetryableError(500, f"fail {i}") for i in range(10)])
    result, waits = run_with(RetryPolicy(retries=2, base_delay=0.01), call)
    assert isinstance(result, RetryableError)
    assert result.message == "fail 2"
    assert call.calls == 3
    assert len(waits) == 2


def test_final_errors_are_not_retried() -> None:
    call = Flaky([FinalError(401, "bad token")])
    result, waits = run_with(RetryPolicy(retries=5), call)
    assert isinstance(result, FinalError)
    assert call.calls == 1
    assert waits == []


@pytest.mark.parametrize("retry", [1, 2, 5, 10])
def test_backoff_delay_is_bounded(retry: int) -> None:
    policy = RetryPolicy(base_delay=1, max_delay=8)
    for _ in range(50):
        assert 0 <= policy.delay(retry, None) <= min(8, 2 ** (retry - 1))
