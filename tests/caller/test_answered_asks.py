"""The caller's memory of answered asks: an ask is known by (batch, seq), not by its NSQ
message id alone, which two nsqd with the same node id hand out twice (issue 19, item 3)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from gpt4batch.common.bus import Delivery
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, Record, ResultMessage
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.topics import Channels, Topics
from gpt4batch.services.caller.service import CallerService
from tests.caller.test_caller import settings_for
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd


def ask(batch: str, seq: int) -> AskMessage:
    record = {"id": f"{batch}{seq}", "asks": [{"id": "a", "content": f"q {batch} {seq}"}]}
    return AskMessage(batch=batch, seq=seq, record=Record.model_validate(record))


class Delivered:
    attempts = 1

    def __init__(self, message_id: str) -> None:
        self.id = message_id

    def touch(self) -> None:
        return None


def chat_calls(mock: MockUpstream) -> int:
    return sum(mock.stats()["calls"].values())


async def memory_caller(mock: MockUpstream, **kw: Any) -> tuple[CallerService, MemoryBus]:
    bus = MemoryBus(topics=Topics("t"), record=True)
    service = CallerService(settings_for(mock), **kw)
    await service.start()
    service.register(bus)
    return service, bus


def test_the_answered_asks_kept_are_bounded_by_answered_memory() -> None:
    """`run` without -n (no redelivery after a publish) keeps none; NSQ callers a bounded few."""
    with MockUpstream("--seed", "3") as mock:

        async def scenario(memory: int) -> list[tuple[str, int, str]]:
            service, _ = await memory_caller(mock, answered_memory=memory)
            try:
                for n in range(3):
                    await service.handle(ask("b", n), Delivered(f"{n:016x}"))
            finally:
                await service.close()
            return service.answered.keys()

        assert asyncio.run(scenario(0)) == []
        newest = [("b", 1, f"{1:016x}"), ("b", 2, f"{2:016x}")]
        assert asyncio.run(scenario(2)) == newest  # the newest, in order


def test_two_asks_with_the_same_message_id_are_both_answered() -> None:
    """Given two different asks that came with the same NSQ message id (two nsqd sharing a
    node id), when the second arrives after the first was answered, it is still called."""
    with MockUpstream("--seed", "3") as mock:

        async def scenario() -> int:
            service, bus = await memory_caller(mock)
            try:
                await service.handle(ask("a", 0), Delivered("0a1b2c3d4e5f6071"))
                await service.handle(ask("b", 0), Delivered("0a1b2c3d4e5f6071"))
            finally:
                await service.close()
            return len(bus.published[bus.topics.results])

        assert asyncio.run(scenario()) == 2
        assert chat_calls(mock) == 2


def test_a_republished_copy_of_an_answered_ask_is_not_paid_again() -> None:
    """Given an ask answered here, when ingest (re-run after a kill) publishes it again
    marked `republished` (a new message id), it is finished without a call; the same ask
    again without the mark (reconcile after nsqd lost its result) runs."""
    with MockUpstream("--seed", "3") as mock:

        async def scenario() -> int:
            service, bus = await memory_caller(mock)
            try:
                await service.handle(ask("a", 3), Delivered("0000000000000001"))
                again = ask("a", 3).model_copy(update={"republished": True})
                await service.handle(again, Delivered("0000000000000002"))
                assert chat_calls(mock) == 1
                await service.handle(ask("a", 3), Delivered("0000000000000003"))
            finally:
                await service.close()
            return len(bus.published[bus.topics.results])

        assert asyncio.run(scenario()) == 2
        assert chat_calls(mock) == 2


def test_a_copy_of_an_ask_running_here_waits_for_it_and_is_not_paid_again() -> None:
    """Given an ask published twice (ingest re-run after a kill: a new message id) or handed
    back by nsqd while it runs here, when both copies are in flight at once, the upstream is
    called once and one result is published; both deliveries end (FIN)."""
    with MockUpstream("--seed", "3", "--latency-ms", "300") as mock:

        async def scenario() -> int:
            service, bus = await memory_caller(mock)
            try:
                await asyncio.gather(
                    service.handle(ask("a", 7), Delivered("0000000000000001")),
                    service.handle(ask("a", 7), Delivered("0000000000000002")),
                )
            finally:
                await service.close()
            return len(bus.published[bus.topics.results])

        assert asyncio.run(scenario()) == 1
        assert chat_calls(mock) == 1


def test_a_copy_runs_if_the_running_one_fails() -> None:
    """The waiting copy is no result by itself: if the running ask ends in an error (no
    result published), the copy runs."""
    with MockUpstream("--seed", "3", "--latency-ms", "200") as mock:

        async def scenario() -> tuple[int, bool]:
            service, bus = await memory_caller(mock)
            answer = service._answer
            failed = {"first": True}

            async def fail_first(msg: AskMessage) -> None:
                if failed.pop("first", False):
                    await asyncio.sleep(0.2)
                    raise RuntimeError("publish failed")
                await answer(msg)

            service._answer = fail_first  # type: ignore[method-assign]
            first = service.handle(ask("a", 1), Delivered("0000000000000001"))
            second = service.handle(ask("a", 1), Delivered("0000000000000002"))
            outcomes = await asyncio.gather(first, second, return_exceptions=True)
            await service.close()
            return len(bus.published[bus.topics.results]), isinstance(outcomes[0], RuntimeError)

        assert asyncio.run(scenario()) == (1, True)
        assert chat_calls(mock) == 1


def test_two_nsqd_sharing_a_node_id_every_record_answered_exactly_once(
    tmp_path: Path, topic_prefix: str
) -> None:
    """Given two nsqd started with the same --node-id, both fed at the same moments (so
    messages published in the same millisecond get the same id on both), when one caller
    consumes both (the second nsqd's asks after the first's are answered), every record of
    both batches is answered exactly once."""
    per_nsqd, rounds = 200, 10
    with (
        run_nsqd(tmp_path, None, "--node-id=617", name="nsqd-a") as nsqd_a,
        run_nsqd(tmp_path, None, "--node-id=617", name="nsqd-b") as nsqd_b,
        MockUpstream("--seed", "4") as mock,
    ):
        topics = Topics(topic_prefix)

        def on(*nsqd: Any) -> BaseServiceSettings:
            return BaseServiceSettings(
                nsqd_tcp_address=[n.tcp_address for n in nsqd], topic_prefix=topic_prefix
            )

        deliveries: list[tuple[str, str, int]] = []
        results: Counter[tuple[str, int]] = Counter()

        async def feed() -> None:
            """Publish `rounds` MPUBs to each nsqd, the two of a round at the same moment."""
            feeders = [NsqBus(on(n), service="ingest") for n in (nsqd_a, nsqd_b)]
            for bus in feeders:
                await bus.start()
            size = per_nsqd // rounds
            for r in range(rounds):
                await asyncio.gather(
                    *(
                        bus.publish_many(
                            topics.asks, [ask(batch, s) for s in range(r * size, (r + 1) * size)]
                        )
                        for bus, batch in zip(feeders, "ab", strict=True)
                    )
                )
            for bus in feeders:
                await bus.stop(grace=0)

        async def until(what: str, done: Any, timeout: float = 90) -> None:
            deadline = time.monotonic() + timeout
            while not done() and time.monotonic() < deadline:
                await asyncio.sleep(0.1)

        async def scenario() -> None:
            await feed()
            # nsqd-b's asks wait until nsqd-a's are answered: a collided id then comes second.
            async with httpx.AsyncClient() as http:
                params = {"topic": topics.asks, "channel": Channels.CALLER}
                pause = f"http://{nsqd_b.http_address}/channel/pause"
                (await http.post(pause, params=params)).raise_for_status()
                service = CallerService(settings_for(mock, **on(nsqd_a, nsqd_b).model_dump()))
                handle = service.handle

                async def recorded(msg: AskMessage, delivery: Delivery) -> None:
                    deliveries.append((delivery.id, msg.batch, msg.seq))
                    await handle(msg, delivery)

                async def collect(msg: ResultMessage, delivery: Delivery) -> None:
                    results[msg.batch, msg.seq] += 1

                service.handle = recorded  # type: ignore[method-assign]
                bus = NsqBus(on(nsqd_a, nsqd_b), service="caller")
                await service.start()
                service.register(bus)
                bus.subscribe(bus.topics.results, Channels.SINK, ResultMessage, collect)
                await bus.start()
                try:
                    await until("nsqd-a's asks", lambda: len(results) >= per_nsqd)
                    unpause = f"http://{nsqd_b.http_address}/channel/unpause"
                    (await http.post(unpause, params=params)).raise_for_status()
                    await until("every result", lambda: sum(results.values()) >= 2 * per_nsqd)
                    await asyncio.sleep(0.5)  # a duplicate result would arrive meanwhile
                finally:
                    await bus.stop(grace=1)
                    await service.close()

        asyncio.run(scenario())
        calls = chat_calls(mock)
    asks_of_id: dict[str, set[tuple[str, int]]] = {}
    for message_id, batch, seq in deliveries:
        asks_of_id.setdefault(message_id, set()).add((batch, seq))
    collided = [i for i, asks in asks_of_id.items() if len(asks) > 1]
    assert collided, "no message id was handed out twice: the test proves nothing"
    expected = {(batch, seq) for batch in "ab" for seq in range(per_nsqd)}
    assert set(results) == expected, f"missing: {sorted(expected - set(results))[:10]}"
    assert set(results.values()) == {1}
    assert calls == 2 * per_nsqd
