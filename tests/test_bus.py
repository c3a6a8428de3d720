"""One suite, two backends: the same bus behaviour on real nsqd and on MemoryBus."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.dispatch import Dispatcher
from gpt4batch.common.errors import Poison, PublishError, Requeue
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, BatchManifest, DeadLetter, Record
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.topics import Topics
from tests.support.nsq_servers import Nsqd, Nsqlookupd

BusFactory = Callable[..., Bus]


def run(coro: Awaitable[Any], timeout: float = 60) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


@pytest.fixture(params=["nsq", "memory"])
def make_bus(request: pytest.FixtureRequest, topic_prefix: str) -> BusFactory:
    """A factory, called inside the running loop, for a bus of either backend."""
    if request.param == "memory":
        shared: dict[str, MemoryBus] = {}

        def memory(**kw: Any) -> Bus:
            # One in-process bus plays the role of nsqd for every "service".
            if "bus" not in shared:
                shared["bus"] = MemoryBus(
                    topics=Topics(topic_prefix),
                    touch_interval=kw.get("touch_interval", 20.0),
                    max_attempts=kw.get("max_attempts", 10),
                )
            return shared["bus"]

        return memory

    nsqd: Nsqd = request.getfixturevalue("nsqd")

    def real(**kw: Any) -> Bus:
        settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address],
            topic_prefix=topic_prefix,
            touch_interval=kw.get("touch_interval", 20.0),
            max_attempts=kw.get("max_attempts", 10),
        )
        return NsqBus(settings, service="test")

    return real


def ask(seq: int, batch: str = "b1") -> AskMessage:
    record = Record.model_validate(
        {"id": f"r{seq}", "asks": [{"id": "a", "content": f"q{seq}"}], "extra": {"k": seq}}
    )
    return AskMessage(batch=batch, seq=seq, record=record)


async def feed_two_asks(bus: Bus, handle: Any, dead: list[DeadLetter]) -> None:
    """`handle` on the asks topic, dead letters collected into `dead`; asks 0 and 1 published."""

    async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
        dead.append(letter)

    bus.subscribe(bus.topics.asks, "caller", AskMessage, handle)
    bus.subscribe(bus.topics.dead, "inspect", DeadLetter, on_dead)
    await bus.start()
    await bus.publish_many(bus.topics.asks, [ask(0), ask(1)])


async def collect_until(got: list[Any], n: int, timeout: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while len(got) < n:
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"only {len(got)} of {n} messages arrived")
        await asyncio.sleep(0.02)


def test_publish_consume_round_trip(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        got: list[AskMessage] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            got.append(msg)

        bus.subscribe(bus.topics.asks, "caller", AskMessage, handle)
        await bus.start()
        sent = ask(7)
        await bus.publish(bus.topics.asks, sent)
        await collect_until(got, 1)
        await bus.stop(grace=1)
        assert got == [sent]
        assert got[0].record.to_line() == sent.record.to_line()

    run(scenario())


def test_mpub_batches_deliver_every_message_once(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        seen: list[int] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            seen.append(msg.seq)

        bus.subscribe(bus.topics.asks, "caller", AskMessage, handle, max_in_flight=500)
        await bus.start()
        await bus.publish_many(bus.topics.asks, [ask(i) for i in range(2500)])
        await collect_until(seen, 2500)
        await asyncio.sleep(0.2)
        await bus.stop(grace=1)
        assert sorted(seen) == list(range(2500))

    run(scenario())


def test_requeue_redelivers_with_attempts_counted(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        attempts: list[int] = []

        async def handle(msg: BatchManifest, delivery: Delivery) -> None:
            attempts.append(delivery.attempts)
            if delivery.attempts < 3:
                raise Requeue("not yet", delay=0.05)

        bus.subscribe(bus.topics.batches, "t", BatchManifest, handle)
        await bus.start()
        await bus.publish(bus.topics.batches, BatchManifest(batch="b", total=1))
        await collect_until(attempts, 3)
        await asyncio.sleep(0.3)
        await bus.stop(grace=1)
        assert attempts == [1, 2, 3]

    run(scenario())


def test_invalid_body_goes_to_dead_letter_with_reason(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus()
        handled: list[AskMessage] = []
        dead: list[DeadLetter] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            handled.append(msg)

        async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
            dead.append(letter)

        bus.subscribe(bus.topics.asks, "caller", AskMessage, handle)
        bus.subscribe(bus.topics.dead, "inspect", DeadLetter, on_dead)
        await bus.start()
        await bus.publish(bus.topics.asks, b'{"v": 1, "batch": "b", "seq": -1}')
        await bus.publish(bus.topics.asks, b"\xff\xfe not json")
        await bus.publish(
            bus.topics.asks, ask(1).model_copy(update={"v": 2}).model_dump_json().encode()
        )
        await collect_until(dead, 3)
        await bus.stop(grace=1)
        assert handled == []
        reasons = sorted(d.reason for d in dead)
        assert any("seq" in r and "greater than or equal to 0" in r for r in reasons)
        assert any("Invalid JSON" in r for r in reasons)
        assert any("schema version v=2" in r for r in reasons)
        assert all(d.topic == bus.topics.asks and d.channel == "caller" for d in dead)
        assert any(d.body_b64 for d in dead)  # non-UTF-8 body kept, base64

    run(scenario())


def test_oversized_poison_bodies_are_dead_lettered_with_size_and_sha256(
    make_bus: BusFactory,
) -> None:
    """A poison body as large as nsqd takes (1 MiB by default) still gets a letter that fits."""
    import hashlib
    import random

    limit = 1024 * 1024
    text = b'{"v": 1, "batch": "b", "seq": -1, "pad": "' + b"\xc3\xa9" * 400_000 + b'"}'
    garbage = random.Random(5).randbytes(limit - 64)

    async def scenario() -> None:
        bus = make_bus()
        dead: list[DeadLetter] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            raise AssertionError("an invalid body reached the handler")

        async def on_dead(letter: DeadLetter, delivery: Delivery) -> None:
            dead.append(letter)

        bus.subscribe(bus.topics.asks, "caller", AskMessage, handle)
        bus.subscribe(bus.topics.dead, "inspect", DeadLetter, on_dead)
        await bus.start()
        await bus.publish(bus.topics.asks, text)
        await bus.publish(bus.topics.asks, garbage)
        await collect_until(dead, 2)
        await bus.stop(grace=1)
        by_size = {d.body_size: d for d in dead}
        assert set(by_size) == {len(text), len(garbage)}
        for body in (text, garbage):
            letter = by_size[len(body)]
            assert letter.body_sha256 == hashlib.sha256(body).hexdigest()
            assert letter.body_truncated
            assert len(letter.model_dump_json()) <= limit // 8
        assert by_size[len(text)].body and by_size[len(text)].body.startswith('{"v": 1')
        assert by_size[len(garbage)].body_b64

    run(scenario())


def test_poison_and_exhausted_retries_are_dead_lettered(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus(max_attempts=2)
        dead: list[DeadLetter] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            if msg.seq == 0:
                raise Poison("record 0 can never work")
            raise RuntimeError("boom")

        await feed_two_asks(bus, handle, dead)
        # seq 1: attempt 1 fails → requeued with backoff (≤1 s); attempt 2 → dead.
        await collect_until(dead, 2, timeout=30)
        await bus.stop(grace=1)
        by_reason = {("never" in d.reason): d for d in dead}
        assert by_reason[True].attempts == 1
        assert "gave up after 2 attempts: RuntimeError: boom" in by_reason[False].reason

    run(scenario())


def test_bounded_requeues_end_in_dead_letters_unbounded_ones_do_not(make_bus: BusFactory) -> None:
    async def scenario() -> None:
        bus = make_bus(max_attempts=3)
        dead: list[DeadLetter] = []
        attempts: dict[int, int] = {}

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            attempts[msg.seq] = delivery.attempts
            if msg.seq == 0:
                raise Requeue("orphan", delay=0.05, bounded=True)
            if delivery.attempts <= 4:  # past max_attempts, still requeued: not bounded
                raise Requeue("rate limited", delay=0.05)

        await feed_two_asks(bus, handle, dead)
        await collect_until(dead, 1, timeout=30)
        while attempts.get(1, 0) < 5:
            await asyncio.sleep(0.05)
        await bus.stop(grace=1)
        assert [(d.attempts, d.reason) for d in dead] == [(3, "gave up after 3 attempts: orphan")]
        assert attempts[0] == 3

    run(scenario())


def test_touch_keeps_a_slow_message_from_timing_out(nsqd: Nsqd, topic_prefix: str) -> None:
    """nsqd here runs with --msg-timeout=3s; the handler takes 12 s. The bus is left at the
    default touch interval (20 s): it touches every 1 s all the same, a third of the timeout
    nsqd announced (at 20 s nsqd redelivered the message and the upstream was paid twice).

    12 s, not just over the timeout: nsqd finds a timed-out message only when its queue
    scan visits the channel, 3 to 8 s after delivery (see the control test below), so a
    shorter handler would pass even if the touches did nothing.
    """

    async def scenario() -> None:
        settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
        )
        assert settings.touch_interval == 20.0
        bus = NsqBus(settings, service="test")
        attempts: list[int] = []

        async def handle(msg: BatchManifest, delivery: Delivery) -> None:
            attempts.append(delivery.attempts)
            assert bus.touch_interval == 1.0  # nsqd's 3 s, announced at IDENTIFY
            await asyncio.sleep(12)

        bus.subscribe(bus.topics.batches, "slow", BatchManifest, handle)
        await bus.start()
        await bus.publish(bus.topics.batches, BatchManifest(batch="b", total=1))
        await collect_until(attempts, 1)
        await asyncio.sleep(13)
        await bus.stop(grace=1)
        assert attempts == [1]
        channels = nsqd.stats(bus.topics.batches)["topics"][0]["channels"]
        (stats,) = [c for c in channels if c["channel_name"] == "slow"]
        assert stats["timeout_count"] == 0
        assert stats["depth"] == 0

    run(scenario())


def test_without_touch_nsqd_redelivers(
    nsqd: Nsqd, topic_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The control for the test above: without touches, nsqd times the message out.

    nsqd does not redeliver at --msg-timeout (3 s) sharp: it finds a timed-out message
    only when its queue scan visits the channel (20 random channels every 100 ms, from a
    channel list refreshed every 5 s), so the redelivery comes 3 to 8 s after the
    delivery, later still when nsqd holds many channels (a whole test session's). A
    first attempt that returned after a fixed 5 s FINs the message whenever the scan
    comes later, and nsqd accepts that FIN (the message is still in flight for it): no
    redelivery, ever. So the first attempt holds the message, untouched, until the
    second one arrives.
    """

    async def scenario() -> None:
        settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
        )
        bus = NsqBus(settings, service="test")
        monkeypatch.setattr(Dispatcher, "_touch_working", lambda self: None)  # no sweeper
        attempts: list[int] = []
        redelivered = asyncio.Event()

        async def handle(msg: BatchManifest, delivery: Delivery) -> None:
            attempts.append(delivery.attempts)
            if delivery.attempts == 1:
                await redelivered.wait()
            else:
                redelivered.set()

        bus.subscribe(bus.topics.batches, "slow", BatchManifest, handle)
        await bus.start()
        await bus.publish(bus.topics.batches, BatchManifest(batch="b", total=1))
        await collect_until(attempts, 2, timeout=40)
        await bus.stop(grace=1)
        assert attempts[:2] == [1, 2]
        channels = nsqd.stats(bus.topics.batches)["topics"][0]["channels"]
        (stats,) = [c for c in channels if c["channel_name"] == "slow"]
        assert stats["timeout_count"] == 1

    run(scenario())


def test_stop_requeues_what_does_not_finish_in_grace(nsqd: Nsqd, topic_prefix: str) -> None:
    async def scenario() -> None:
        def settings() -> BaseServiceSettings:
            return BaseServiceSettings(
                nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix, touch_interval=1
            )

        first = NsqBus(settings(), service="first")
        started = asyncio.Event()

        async def hang(msg: BatchManifest, delivery: Delivery) -> None:
            started.set()
            await asyncio.sleep(3600)

        first.subscribe(first.topics.batches, "work", BatchManifest, hang)
        await first.start()
        await first.publish(first.topics.batches, BatchManifest(batch="b", total=1))
        await asyncio.wait_for(started.wait(), 10)
        await first.stop(grace=0.2)

        second = NsqBus(settings(), service="second")
        got: list[int] = []

        async def ok(msg: BatchManifest, delivery: Delivery) -> None:
            got.append(delivery.attempts)

        second.subscribe(second.topics.batches, "work", BatchManifest, ok)
        await second.start()
        await collect_until(got, 1, timeout=10)
        await second.stop(grace=1)
        assert got == [2]

    run(scenario())


def test_discovery_through_nsqlookupd(
    nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> None:
    """Only nsqlookupd's address is given: the bus finds nsqd for publishing and consuming."""

    async def scenario() -> None:
        settings = BaseServiceSettings(
            lookupd_http_address=[nsqlookupd.http_address], topic_prefix=topic_prefix
        )
        bus = NsqBus(settings, service="test", lookupd_poll_interval=1)
        got: list[AskMessage] = []

        async def handle(msg: AskMessage, delivery: Delivery) -> None:
            got.append(msg)

        bus.subscribe(bus.topics.asks, "caller", AskMessage, handle)
        await bus.start()
        await bus.publish(bus.topics.asks, ask(3))
        await collect_until(got, 1, timeout=20)
        await bus.stop(grace=1)
        assert got[0].seq == 3

    run(scenario())


def test_publish_refuses_oversized_message_before_sending(nsqd: Nsqd, topic_prefix: str) -> None:
    async def scenario() -> None:
        settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
        )
        bus = NsqBus(settings, service="test", max_msg_size=1000)
        await bus.start()
        with pytest.raises(PublishError, match="exceeds the 1000-byte limit"):
            await bus.publish(bus.topics.asks, b"x" * 2000)
        await bus.publish(bus.topics.asks, b"small")  # the connection is still usable
        await bus.stop()

    run(scenario())
