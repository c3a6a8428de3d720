"""The gateway's default window: twice the registered callers' concurrency, bounded
(issue 22 item 7), without NSQ."""

from __future__ import annotations

import asyncio

from gpt4batch.common.nsq.callers import CallerInfo
from gpt4batch.services.gateway.window import (
    CEILING,
    FALLBACK,
    FLOOR,
    FleetWindow,
    registered_concurrency,
    window_for,
)


def test_window_for_the_fleet() -> None:
    assert window_for(None) == FALLBACK == 64
    assert window_for(0) == window_for(3) == FLOOR == 16
    assert window_for(16) == 32
    assert window_for(10_000) == CEILING == 1000


class FakeServing:
    def __init__(self, answers: list[list[CallerInfo] | None]) -> None:
        self.answers = answers

    async def callers(self) -> list[CallerInfo] | None:
        return self.answers.pop(0)


def test_the_window_follows_the_registered_callers_and_keeps_it_when_nsqd_is_away() -> None:
    def caller(name: str, concurrency: int, limit: str) -> CallerInfo:
        return CallerInfo(
            id=name, kind="openai", endpoints=("/v1/chat/completions",),
            concurrency=concurrency, limit=limit,
        )  # fmt: skip

    fleet = [caller("a", 20, "fleet:g"), caller("b", 30, "fleet:g"), caller("c", 8, "process")]
    serving = FakeServing([fleet, None, []])
    read = registered_concurrency(serving)  # type: ignore[arg-type]
    window = FleetWindow(None, interval=0.01)
    sizes: list[int] = []
    done = asyncio.Event()

    async def source() -> int | None:
        sizes.append(window.size)  # what the window was before this read
        if not serving.answers:
            done.set()
            await asyncio.Event().wait()  # no more reads
        return await read()

    async def follow() -> None:
        window.follow(source)
        await asyncio.wait_for(done.wait(), 10)
        await window.close()

    asyncio.run(follow())
    # fleet: the group's smallest once (20) plus the process-limited caller's (8); nsqd
    # away (None): the last window kept; nothing registered: the fallback
    assert sizes == [FALLBACK, 2 * (20 + 8), 2 * (20 + 8), FALLBACK]
    assert FleetWindow(7).size == 7  # --window
