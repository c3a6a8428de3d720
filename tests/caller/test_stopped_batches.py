"""A batch the gateway stopped: the caller finishes its asks without calling the upstream
(issue 22 item 7), remembers stops in bounded, expiring memory, and refuses an unsigned stop."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.bus import Delivery
from gpt4batch.common.errors import FinalError, IErrCode
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, BatchStopped, ResultMessage
from gpt4batch.common.topics import Channels, Topics
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.stopped import (
    StoppedBatches,
    before_first_call,
    first_call_guard,
)
from tests.caller.test_caller import ask_message, settings_for
from tests.support.mock_upstream import MockUpstream


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "3") as server:
        yield server


def test_memory_is_bounded_and_expires() -> None:
    now = [0.0]
    stopped = StoppedBatches(memory=3, ttl=10.0, clock=lambda: now[0])
    assert stopped.reason("b0") is None
    assert stopped.stop("b0", "cancelled") and not stopped.stop("b0", "cancelled")
    for i in range(1, 5):
        stopped.stop(f"b{i}", "expired")
    assert len(stopped) == 3 and stopped.reason("b0") is None  # the oldest went first
    assert stopped.reason("b4") == "expired"
    now[0] = 5.0
    stopped.stop("b2", "expired")  # announced again: remembered 10 s from now
    now[0] = 11.0
    assert stopped.reason("b3") is None and stopped.reason("b2") == "expired"
    stopped.stop("b5", "cancelled")  # expired ones are swept as new ones come
    assert len(stopped) == 2


def test_a_taken_ask_of_a_stopped_batch_makes_no_first_call() -> None:
    """An ask the caller took before the stop waits for its calls/s slot; after the wait
    its first call is not made if its batch stopped meanwhile; a later call goes on."""
    stopped = StoppedBatches()
    slots: list[str] = []

    async def acquire(endpoint: str) -> None:
        slots.append(endpoint)

    guard = first_call_guard(acquire, stopped)

    async def conversation(batch: str, stop_after: int) -> int:
        before_first_call(batch)
        calls = 0
        for _ in range(2):
            if calls == stop_after:
                stopped.stop(batch, "cancelled")
            await guard("chat")
            calls += 1
        return calls

    async def scenario() -> None:
        assert await asyncio.create_task(conversation("running", stop_after=9)) == 2
        assert await asyncio.create_task(conversation("paid-once", stop_after=1)) == 2
        try:
            await asyncio.create_task(conversation("stopped", stop_after=0))
        except FinalError as exc:
            assert exc.status == IErrCode.BATCH_CANCELLED
        else:
            raise AssertionError("the first call of a stopped batch was made")

    asyncio.run(scenario())
    assert len(slots) == 5


def run_caller(
    mock: MockUpstream, notices: list[bytes], asks: list[AskMessage]
) -> list[ResultMessage]:
    """Publish `notices` (raw bodies) on the stopped topic, then `asks`; the results."""

    async def scenario() -> list[ResultMessage]:
        secret = Authenticator(b"s" * 32)
        bus = MemoryBus(topics=Topics("t"), authenticator=secret)
        service = CallerService(settings_for(mock))
        await service.start()
        service.register(bus)
        results: list[ResultMessage] = []

        async def collect(msg: ResultMessage, delivery: Delivery) -> None:
            results.append(msg)

        bus.subscribe(bus.topics.results, "sink", ResultMessage, collect)
        await bus.start()
        topic = bus.topics.stopped
        for body in notices:
            await bus.publish(topic, body, verbatim=True)
        while await bus.backlog(topic, Channels.stopped(service.instance)):
            await asyncio.sleep(0.01)
        await bus.publish_many(bus.topics.asks, asks)
        while len(results) < len(asks):
            await asyncio.sleep(0.01)
        await bus.stop(grace=1)
        await service.close()
        return results

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def signed(topic: str, body: dict[str, Any]) -> bytes:
    return Authenticator(b"s" * 32).sign(topic, BatchStopped(**body).model_dump_json().encode())


def chat_calls(mock: MockUpstream) -> int:
    return sum(mock.stats()["calls"].values())


def test_asks_of_a_stopped_batch_are_finished_without_a_call(mock: MockUpstream) -> None:
    topic = Topics("t").stopped
    asks = [
        ask_message({"id": f"r{i}", "asks": [{"id": "a", "content": "hi"}]}, seq=i)
        for i in range(4)
    ] + [
        ask_message({"id": "x", "asks": [{"id": "a", "content": "hi"}]}, seq=0).model_copy(
            update={"batch": "other"}
        ),
        ask_message({"id": "y", "asks": [{"id": "a", "content": "hi"}]}, seq=0).model_copy(
            update={"batch": "late"}
        ),
    ]
    notices = [
        signed(topic, {"batch": "b", "reason": "cancelled"}),
        signed(topic, {"batch": "late", "reason": "expired"}),
    ]
    before = chat_calls(mock)
    results = {r.record.id: r for r in run_caller(mock, notices, asks)}

    assert chat_calls(mock) - before == 1  # only the batch nobody stopped
    assert results["x"].record.iErr is None and results["x"].record.answers
    for i in range(4):
        record = results[f"r{i}"].record
        assert record.iErr is not None and record.iErr.code == IErrCode.BATCH_CANCELLED
        assert not record.answers
    assert results["y"].record.iErr is not None
    assert results["y"].record.iErr.code == IErrCode.BATCH_EXPIRED


def test_an_unsigned_stop_is_refused(mock: MockUpstream) -> None:
    """Whoever can publish to nsqd may send asks, never stop a batch."""
    forged = BatchStopped(batch="b", reason="cancelled").model_dump_json().encode()
    wrong_key = Authenticator(b"x" * 32).sign(Topics("t").stopped, forged)
    asks = [ask_message({"id": "r0", "asks": [{"id": "a", "content": "hi"}]})]
    before = chat_calls(mock)
    results = run_caller(mock, [forged, wrong_key], asks)
    assert chat_calls(mock) - before == 1
    assert results[0].record.iErr is None and results[0].record.answers


def test_a_redelivery_of_an_ask_being_called_when_its_batch_stops_waits_for_the_call() -> None:
    """nsqd hands an ask back (a TOUCH came late under load) while its call is running, and
    its batch stops meanwhile: the copy waits for the running call and is finished with it,
    never answered unrun. An unrun answer first would let the gateway end the batch with
    the paid answer still on its way (dropped from its files, and not counted)."""

    class Redelivery:
        id = "0a1b2c3d4e5f6071"  # both deliveries: the same NSQ message
        attempts = 1

        def touch(self) -> None:
            return None

    msg = ask_message({"id": "r0", "asks": [{"id": "a", "content": "hi"}]})

    async def scenario(mock: MockUpstream) -> list[ResultMessage]:
        bus = MemoryBus(topics=Topics("t"), record=True)
        service = CallerService(settings_for(mock))
        await service.start()
        service.register(bus)
        try:
            first = asyncio.create_task(service.handle(msg, Redelivery()))
            while not (await asyncio.to_thread(mock.stats))["in_flight"]:
                await asyncio.sleep(0.02)  # its call is running
            service.stopped.stop(msg.batch, "expired")
            await asyncio.gather(first, service.handle(msg, Redelivery()))
        finally:
            await service.close()
        return [ResultMessage.model_validate_json(b) for b in bus.published[bus.topics.results]]

    with MockUpstream("--seed", "3", "--latency-ms", "1000") as mock:
        results = asyncio.run(asyncio.wait_for(scenario(mock), 60))
        calls = chat_calls(mock)
    assert calls == 1
    assert [(r.seq, r.record.iErr) for r in results] == [(0, None)]  # the paid answer only
    assert results[0].record.answers


def test_listening_first_counts_from_the_first_ask_and_not_for_a_runs_own_batch() -> None:
    """A caller on NSQ listens for stop notices `listen_first` s from its first ask (not
    from its first call, which may wait for its fleet share first); the asks of a batch no
    gateway stops (`unstoppable`: a run's own) do not wait."""
    now = [100.0]
    stopped = StoppedBatches(listen_first=1.5, clock=lambda: now[0], unstoppable=["run-batch"])
    stopped.before_first_call("gw-batch")  # the first ask: the clock starts
    now[0] = 101.0  # a second later its first call comes
    assert stopped.until_heard("gw-batch") == pytest.approx(0.5)
    assert stopped.until_heard("run-batch") == 0.0
    now[0] = 101.5
    assert stopped.until_heard("gw-batch") == 0.0
