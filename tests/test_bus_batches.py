"""`Bus.subscribe_batches`: groups of deliveries, each acknowledged by its own outcome,
on real nsqd and on MemoryBus (the same `BatchDispatcher`)."""

from __future__ import annotations

import asyncio

from gpt4batch.common.bus import Delivery
from gpt4batch.common.dispatch.batches import GROUP_BYTES
from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.messages import AskMessage, BatchManifest, DeadLetter
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from tests.support.nsq_servers import Nsqd
from tests.test_bus import BusFactory, ask, collect_until, make_bus, run

__all__ = ["make_bus"]  # the two-backend fixture of tests/test_bus.py


def test_each_message_of_a_group_gets_its_own_outcome(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        groups: list[int] = []
        finished: list[int] = []
        retried: list[int] = []
        dead: list[DeadLetter] = []

        async def handle(items: list[tuple[AskMessage, Delivery]]) -> list[Exception | None]:
            groups.append(len(items))
            outcomes: list[Exception | None] = []
            for msg, delivery in items:
                if msg.seq % 5 == 1 and delivery.attempts == 1:
                    outcomes.append(Requeue("later", delay=0.05))
                elif msg.seq % 5 == 2:
                    outcomes.append(Poison("never"))
                else:
                    (retried if delivery.attempts > 1 else finished).append(msg.seq)
                    outcomes.append(None)
            return outcomes

        async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
            dead.append(letter)

        bus.subscribe_batches(bus.topics.asks, "caller", AskMessage, handle, every=50, interval=0.1)
        bus.subscribe(bus.topics.dead, "inspect", DeadLetter, on_dead)
        await bus.start()
        await bus.publish_many(bus.topics.asks, [ask(i) for i in range(40)])
        await bus.publish(bus.topics.asks, b'{"v": 1, "batch": "b", "seq": -1}')
        await collect_until(dead, 9)
        await collect_until(retried, 8)
        await asyncio.sleep(0.3)
        await bus.stop(grace=1)
        assert sorted(finished) == [i for i in range(40) if i % 5 not in (1, 2)]
        assert sorted(retried) == [i for i in range(40) if i % 5 == 1]
        assert sum(1 for d in dead if d.reason == "never") == 8
        assert any("greater than or equal to 0" in d.reason for d in dead)
        assert max(groups) > 1, "messages arriving together are handled as one group"

    run(scenario())


def test_a_group_holds_at_most_group_bytes_of_bodies(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        groups: list[int] = []  # body bytes of each group
        handled: list[int] = []

        async def handle(items: list[tuple[AskMessage, Delivery]]) -> list[Exception | None]:
            groups.append(sum(len(msg.model_dump_json()) for msg, _ in items))
            handled.extend(msg.seq for msg, _ in items)
            return [None] * len(items)

        bus.subscribe_batches(bus.topics.asks, "sink", AskMessage, handle, every=500, interval=0.2)
        await bus.start()
        big = []
        for i in range(24):  # 14 MB of asks of 600 KB, arriving together
            msg = ask(i)
            msg.record.asks[0].content = "x" * 600_000
            big.append(msg)
        await bus.publish_many(bus.topics.asks, big)
        await collect_until(handled, 24)
        await bus.stop(grace=1)
        assert sorted(handled) == list(range(24))
        assert max(groups) <= GROUP_BYTES, groups
        assert len(groups) < 24, "bodies under the bound still share a group"

    run(scenario())


def test_a_failing_group_is_requeued_whole(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        seen: list[tuple[int, int]] = []

        async def handle(items: list[tuple[AskMessage, Delivery]]) -> list[Exception | None]:
            seen.extend((m.seq, d.attempts) for m, d in items)
            if any(d.attempts == 1 for _, d in items):
                raise OSError(28, "No space left on device")
            return [None] * len(items)

        bus.subscribe_batches(bus.topics.asks, "caller", AskMessage, handle, interval=0.05)
        await bus.start()
        await bus.publish_many(bus.topics.asks, [ask(i) for i in range(5)])
        await collect_until(seen, 10)
        await asyncio.sleep(0.3)
        await bus.stop(grace=1)
        assert sorted(seen) == sorted([(i, 1) for i in range(5)] + [(i, 2) for i in range(5)])

    run(scenario())


def test_stop_requeues_a_group_that_does_not_finish_in_grace(nsqd: Nsqd, topic_prefix: str) -> None:
    async def scenario() -> None:
        def settings() -> BaseServiceSettings:
            return BaseServiceSettings(
                nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix, touch_interval=1
            )

        first = NsqBus(settings(), service="first")
        started = asyncio.Event()

        async def hang(items: list[tuple[BatchManifest, Delivery]]) -> list[Exception | None]:
            started.set()
            await asyncio.sleep(3600)
            return [None] * len(items)

        first.subscribe_batches(first.topics.batches, "work", BatchManifest, hang, interval=0.01)
        await first.start()
        await first.publish(first.topics.batches, BatchManifest(batch="b", total=1))
        await asyncio.wait_for(started.wait(), 10)
        await first.stop(grace=0.2)

        second = NsqBus(settings(), service="second")
        got: list[int] = []

        async def ok(items: list[tuple[BatchManifest, Delivery]]) -> list[Exception | None]:
            got.extend(d.attempts for _, d in items)
            return [None] * len(items)

        second.subscribe_batches(second.topics.batches, "work", BatchManifest, ok, interval=0.01)
        await second.start()
        await collect_until(got, 1, timeout=10)
        await second.stop(grace=1)
        assert got == [2]

    run(scenario())
