"""The token limit (services/caller/limits/tokens.py) on a simulated clock.

The waits are asked of the limiter (`_wait`) and the clock is moved by them, so a
whole minute of calls runs in no time; every start still goes through `reserve`.
"""

from __future__ import annotations

import asyncio
import functools
import random
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

import pytest

from gpt4batch.common.tokens import PER_MESSAGE, PER_REPLY
from gpt4batch.services.caller.limits.tokens import MAX_PAUSE, TokenLimit, parse_duration


def run_async(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def body(completion: int) -> dict:
    """A chat body whose estimate is `completion` + 10 tokens (an 8-char message)."""
    return {"messages": [{"role": "user", "content": "x" * 16}], "max_tokens": completion}


PROMPT = PER_MESSAGE + 4 + PER_REPLY  # the estimate of body()'s prompt


def usage(prompt: int, completion: int) -> dict:
    return {"usage": {"prompt_tokens": prompt, "completion_tokens": completion}}


async def start(limit: TokenLimit, clock: Clock, request: dict) -> object:
    """Move the clock to when `request` may start, and start it."""
    tokens = limit._wait(0, clock.now)  # the pause, if any
    estimate = PROMPT + request["max_tokens"]
    wait = max(tokens, limit._wait(estimate, clock.now))
    assert wait != float("inf"), "the call would wait for ever"
    clock.now += max(0.0, wait)
    reservation = await limit.reserve(request)
    limit.started(reservation)
    return reservation


def max_in_window(starts: Sequence[tuple[float, int]], window: float = 60.0) -> int:
    """The most tokens started within any `window` seconds (starts sorted by time)."""
    best, total, first = 0, 0, 0
    for t, tokens in starts:
        total += tokens
        while starts[first][0] <= t - window:
            total -= starts[first][1]
            first += 1
        best = max(best, total)
    return best


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1.5s", 1.5), ("2", 2.0), ("1h2m3s", 3723.0),
     ("", None), (None, None), ("soon", None), ("5x", None)],
)  # fmt: skip
def test_parse_duration(value: str | None, seconds: float | None) -> None:
    assert parse_duration(value) == seconds


@run_async
async def test_one_caller_never_passes_its_tokens_per_minute() -> None:
    """Given a 60,000-token limit and calls of 50..400 tokens that use less than reserved,
    when 30 simulated minutes of calls run, then no 60-s window holds more than 60,000."""
    clock, rng = Clock(), random.Random(7)
    limit = TokenLimit(60_000, clock=clock)
    starts: list[tuple[float, int]] = []
    begin = clock.now
    while clock.now < begin + 1800:
        request = body(rng.randint(40, 390))
        reservation = await start(limit, clock, request)
        used = rng.randint(1, request["max_tokens"])
        starts.append((clock.now, PROMPT + used))
        limit.settle(reservation, usage(PROMPT, used))
    assert max_in_window(starts) <= 60_000
    # ... and it uses the limit: from the second minute on, >= 95% of it a minute.
    later = [tokens for t, tokens in starts if t >= begin + 60]
    assert sum(later) / ((clock.now - begin - 60) / 60) >= 0.95 * 60_000


@run_async
async def test_correction_returns_unused_tokens_and_charges_overuse() -> None:
    clock = Clock()
    limit = TokenLimit(6000, clock=clock)
    reservation = await limit.reserve(body(990))
    assert limit.window_tokens() == PROMPT + 990
    limit.settle(reservation, usage(PROMPT, 90))
    assert limit.window_tokens() == PROMPT + 90
    # The pace clock was given the unused tokens back: the next call waits for 100 only.
    assert limit._wait(100, clock.now) == pytest.approx((PROMPT + 90) * 60.6 / 6000)
    limit.settle(reservation, {"usage": {"input_tokens": 500, "output_tokens": 600}})
    assert limit.window_tokens() == 1100  # a Responses usage, more than estimated
    limit.settle(reservation, {"message": {}})  # no usage reported: unchanged
    assert limit.window_tokens() == 1100


@run_async
async def test_429_refunds_the_call_and_pauses_as_the_headers_say() -> None:
    clock = Clock()
    paused: list[float] = []
    limit = TokenLimit(60_000, clock=clock, on_pause=paused.append)
    reservation = await limit.reserve(body(100))
    limit.rate_limited(reservation, None, "1.5s")
    assert limit.window_tokens() == 0  # refused: it took no tokens
    assert paused == [1.5] and limit.paused_for() == pytest.approx(1.5)
    assert limit._wait(10, clock.now) == pytest.approx(1.5)
    limit.rate_limited(None, "3", "20ms")  # retry-after wins over reset-tokens
    assert paused == [1.5, 3.0]
    limit.rate_limited(None, None, "6m0s")  # capped: a daily quota is not a TPM pause
    assert paused[-1] == MAX_PAUSE
    clock.now += MAX_PAUSE
    assert limit._wait(10, clock.now) <= 0


@run_async
async def test_429_with_tokens_remaining_is_not_a_token_pause() -> None:
    clock = Clock()
    paused: list[float] = []
    limit = TokenLimit(60_000, clock=clock, on_pause=paused.append)
    reservation = await limit.reserve(body(100))
    # the window still had room for the call: the requests limit refused it, not tokens
    limit.rate_limited(reservation, None, "1.5s", "50000")
    assert paused == [] and limit.paused_for() == 0
    assert limit.window_tokens() == 0
    # no room left: the token limit's reset is the pause
    reservation = await limit.reserve(body(100))
    limit.rate_limited(reservation, None, "1.5s", "0")
    assert paused == [1.5]
    limit.rate_limited(None, None, "2s", "not a number")  # unreadable: the reset holds
    assert paused[-1] == 2.0


@run_async
async def test_429_pause_is_honoured_without_a_token_limit() -> None:
    clock = Clock()
    limit = TokenLimit(0, clock=clock)
    assert await limit.reserve(body(100)) is None  # no limit: nothing metered
    limit.rate_limited(None, "2", None)
    assert limit._wait(0, clock.now) == pytest.approx(2.0)


@run_async
async def test_a_member_without_a_share_waits_until_it_gets_one() -> None:
    limit = TokenLimit(6000, share=0)
    waiting = asyncio.create_task(limit.reserve(body(100)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    limit.set_share(6000, 2000)
    reservation = await asyncio.wait_for(waiting, 5)
    assert reservation is not None and limit.window_tokens() == PROMPT + 100


@run_async
async def test_unused_reservation_wakes_a_waiting_call() -> None:
    """A call waiting on a full window starts as soon as a correction frees room."""
    limit = TokenLimit(1200)
    first = await limit.reserve(body(990))
    limit._pace = 0  # only the window binds here
    waiting = asyncio.create_task(limit.reserve(body(990)))
    await asyncio.sleep(0.05)
    assert not waiting.done()
    limit.settle(first, usage(PROMPT, 10))
    assert await asyncio.wait_for(waiting, 5) is not None


@run_async
async def test_fleet_shares_stay_within_the_limit_through_a_join_and_a_leave() -> None:
    """Given 3 members sharing 120,000/min, when a 4th joins at 317 s and one leaves at
    624 s (each taking its new share at once), then no 60-s window holds more than the
    limit plus one call per member."""
    clock, rng = Clock(), random.Random(11)
    total = 120_000
    members = [TokenLimit(total, share=total / 3, clock=clock) for _ in range(3)]
    starts: list[tuple[float, int]] = []
    begin = clock.now
    changes = [begin + 317.3, begin + 623.9, begin + 900]
    request = body(rng.randint(40, 390))
    while changes:
        estimate = PROMPT + request["max_tokens"]
        waits = [max(0.0, m._wait(estimate, clock.now)) for m in members]
        if clock.now + min(waits) >= changes[0]:  # the group changes first
            clock.now = changes.pop(0)
            if len(members) == 3:
                members.append(TokenLimit(total, share=0, clock=clock))
            else:
                members.pop(0)
            for member in members:
                member.set_share(total, total / len(members))
            continue
        member = members[waits.index(min(waits))]
        reservation = await start(member, clock, request)
        used = rng.randint(1, request["max_tokens"])
        starts.append((clock.now, PROMPT + used))
        member.settle(reservation, usage(PROMPT, used))
        request = body(rng.randint(40, 390))
    assert max_in_window(starts) <= total + 4 * (PROMPT + 390)
    later = [tokens for t, tokens in starts if t >= begin + 60]
    assert sum(later) / ((clock.now - begin - 60) / 60) >= 0.95 * total
