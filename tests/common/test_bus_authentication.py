"""The bus signs what it publishes on authenticated topics and refuses what does not verify
(unit level, in memory; tests/security/test_nsq_attacks.py replays it on real nsqd)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from gpt4batch.common import metrics
from gpt4batch.common.authenticator import Authenticator, Refusals
from gpt4batch.common.bus import Delivery
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import DeadLetter, Record, ResultMessage
from gpt4batch.common.topics import Topics


def result(seq: int) -> ResultMessage:
    return ResultMessage(batch="b", seq=seq, record=Record(id=f"r{seq}", asks=[]))


async def _settle(bus: MemoryBus, *topics: str) -> None:
    for _ in range(200):
        if all(bus.depth(t, "c") == 0 for t in topics):
            break
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)


def test_only_signed_results_reach_the_handler_and_refusals_are_counted_and_dead() -> None:
    topics = Topics("auth1")
    got: list[int] = []
    letters: list[DeadLetter] = []

    async def scenario() -> None:
        bus = MemoryBus(topics=topics, record=True, authenticator=Authenticator(b"k" * 32))
        forger = MemoryBus(topics=topics, authenticator=Authenticator(b"x" * 32))

        async def take(msg: ResultMessage, delivery: Delivery) -> None:
            got.append(msg.seq)

        async def dead(letter: DeadLetter, delivery: Delivery) -> None:
            letters.append(letter)

        bus.subscribe(topics.results, "c", ResultMessage, take)
        bus.subscribe(topics.dead, "c", DeadLetter, dead)
        await bus.start()
        await bus.publish(topics.results, result(0))  # ours: signed
        await bus.publish(topics.results, result(1).model_dump_json().encode(), verbatim=True)
        other = forger._signed(topics.results, result(2), False)  # another secret
        await bus.publish(topics.results, other, verbatim=True)
        forged_letter = letters_body(topics.results)
        await bus.publish(topics.dead, forged_letter, verbatim=True)  # dropped, no new letter
        await _settle(bus, topics.results, topics.dead)
        await bus.stop(1)

    before = refused(topics.results), refused(topics.dead)
    asyncio.run(scenario())
    assert got == [0]
    assert refused(topics.results) - before[0] == 2
    assert refused(topics.dead) - before[1] == 1
    assert sorted(letter.unauthenticated for letter in letters) == [True, True]
    assert all(letter.reason.startswith("refused: ") for letter in letters)


def letters_body(topic: str) -> bytes:
    letter = DeadLetter(
        topic=topic, channel="c", service="x", id="1", attempts=1, reason="r", at=0.0, body="{}"
    )
    return letter.model_dump_json().encode()


def refused(topic: str) -> float:
    value = metrics.REFUSED.labels("embedded", topic)._value.get()  # type: ignore[attr-defined]
    return float(value)


def test_refusals_are_counted_each_but_logged_once_per_interval(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    warnings: list[dict[str, Any]] = []
    monkeypatch.setattr(
        "gpt4batch.common.authenticator.log.warning",
        lambda event, **kw: warnings.append(kw),
    )

    class Counter:
        n = 0

        def inc(self) -> None:
            self.n += 1

    counter = Counter()
    refusals = Refusals(counter, "t", "c", every=60.0)
    for _ in range(1000):
        refusals.add("no authenticator")
    assert counter.n == 1000
    assert len(warnings) == 1 and warnings[0]["refused"] == 1
    refusals._logged_at = time.monotonic() - 61
    refusals.add("authenticator does not verify")
    assert len(warnings) == 2 and warnings[1]["refused"] == 1000
