"""A retry policy declared at subscribe time (`Retries`): how many deliveries, the waits
between them, and what giving up means, each subscription its own, on both backends."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from gpt4batch.common.bus import Delivery, Retries, Subscription
from gpt4batch.common.dispatch import dispatcher_for
from gpt4batch.common.errors import Requeue
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, DeadLetter
from gpt4batch.common.retry import RetryPolicy
from tests.test_bus import BusFactory, ask, collect_until, make_bus, run

__all__ = ["make_bus"]  # the two-backend fixture of tests/test_bus.py

QUICK = RetryPolicy(base_delay=0.01, max_delay=0.01)


def test_each_subscription_retries_as_it_declared(make_bus: BusFactory) -> None:
    """The bus allows 10 attempts; channel `short` declares 2 (then `…dead`), channel
    `own` declares 3 and its own give_up (no dead letter, the message is finished)."""

    async def scenario() -> None:
        bus = make_bus(max_attempts=10)
        dead: list[DeadLetter] = []
        given_up: list[tuple[int, int, str]] = []

        async def fail(msg: AskMessage, delivery: Delivery) -> None:
            if msg.seq == 0:
                raise Requeue("orphan", bounded=True)
            raise RuntimeError("boom")

        async def give_up(msg: AskMessage, delivery: Delivery, reason: str) -> None:
            given_up.append((msg.seq, delivery.attempts, reason))

        async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
            dead.append(letter)

        asks = bus.topics.asks
        bus.subscribe(asks, "short", AskMessage, fail, retries=Retries(2, QUICK))
        bus.subscribe(asks, "own", AskMessage, fail, retries=Retries(3, QUICK, give_up))
        bus.subscribe(bus.topics.dead, "inspect", DeadLetter, on_dead)
        await bus.start()
        await bus.publish_many(asks, [ask(0), ask(1)])
        # Generous: nsqd delivers a requeued (deferred) message when its queue scan visits
        # the channel, 20 random channels every 100 ms; late in a test session the shared
        # nsqd holds thousands, and one 10 ms requeue took 28 s in CI.
        await collect_until(dead, 2, timeout=90)
        await collect_until(given_up, 2, timeout=90)
        while await bus.backlog(asks, "own"):  # finished after give_up (bounded by run())
            await asyncio.sleep(0.05)
        await bus.stop(grace=1)
        assert sorted((d.channel, d.attempts, d.reason) for d in dead) == [
            ("short", 2, "gave up after 2 attempts: RuntimeError: boom"),
            ("short", 2, "gave up after 2 attempts: orphan"),
        ]
        assert sorted(given_up) == [
            (0, 3, "gave up after 3 attempts: orphan"),
            (1, 3, "gave up after 3 attempts: RuntimeError: boom"),
        ]

    run(scenario(), timeout=240)


@dataclass
class Message:
    """A delivery as a transport hands it to the dispatcher, recording its outcome."""

    body: bytes
    attempts: int = 1
    id: str = "0000000000000001"
    outcome: tuple[str, float] | None = None

    def finish(self) -> None:
        self.outcome = ("finish", 0.0)

    def requeue(self, delay: float) -> None:
        self.outcome = ("requeue", delay)

    def touch(self) -> None:
        pass


async def outcome_of(
    error: Exception, retries: Retries[Any], attempts: int = 1, bus: MemoryBus | None = None
) -> Any:
    bus = bus or MemoryBus()

    async def handle(msg: AskMessage, delivery: Delivery) -> None:
        raise error

    sub = Subscription(bus.topics.asks, "c", AskMessage, handle, 1, retries=retries)
    msg = Message(ask(0).model_dump_json().encode(), attempts)
    await dispatcher_for(bus, sub).run(msg)
    return msg.outcome


def test_the_wait_is_the_declared_backoff_with_retry_after_as_its_floor() -> None:
    slow = RetryPolicy(base_delay=30, max_delay=30)
    never = RetryPolicy(base_delay=0, max_delay=0)
    assert run(outcome_of(Requeue("later", retry_after=7.0), Retries(5, never))) == (
        "requeue",
        7.0,
    )
    assert run(outcome_of(RuntimeError("x"), Retries(5, never))) == ("requeue", 0.0)
    kind, delay = run(outcome_of(Requeue("later", bounded=True), Retries(5, slow)))
    assert kind == "requeue" and 0 <= delay <= 30
    assert run(outcome_of(Requeue("now", delay=0.5), Retries(5, slow))) == ("requeue", 0.5)


def test_a_give_up_that_fails_keeps_the_message() -> None:
    async def broken(msg: AskMessage, delivery: Delivery, reason: str) -> None:
        raise ConnectionError("nsqd down")

    retries: Retries[AskMessage] = Retries(2, RetryPolicy(base_delay=0, max_delay=0), broken)
    assert run(outcome_of(Requeue("x", bounded=True), retries, attempts=2)) == ("requeue", 0.0)
    assert run(outcome_of(Requeue("x", bounded=True), retries, attempts=1)) == ("requeue", 0.0)


def test_without_a_declaration_the_bus_policy_applies() -> None:
    bus = MemoryBus(max_attempts=4, record=True)
    assert run(outcome_of(RuntimeError("x"), Retries(), 3, bus))[0] == "requeue"
    assert bus.topics.dead not in bus.published
    assert run(outcome_of(RuntimeError("x"), Retries(), 4, bus)) == ("finish", 0.0)
    [letter] = bus.published[bus.topics.dead]  # the bus's 4 attempts: dead-lettered, finished
    assert (
        DeadLetter.model_validate_json(letter).reason == "gave up after 4 attempts: RuntimeError: x"
    )
