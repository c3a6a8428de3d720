"""Nothing is paid twice: retries repeat only the failed call; a conversation never runs
past the NSQ message timeout (which would hand it to a second caller meanwhile)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import Ask, AskMessage, Record, ResultMessage
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.services.caller.conversation import ConversationRunner
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings
from tests.caller.test_caller import settings_for
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import run_nsqd

DATA = Path(__file__).resolve().parents[1] / "data"


def caller_settings(mock: MockUpstream, **kw: Any) -> CallerSettings:
    return settings_for(mock, **{"retries": 12, **kw})


def record(i: int, asks: int = 2) -> dict[str, Any]:
    return {
        "id": f"r{i}",
        "asks": [
            {"id": f"a{k}", "content": f"q{k}", "images": ["1.jpeg"], "files": ["example.txt"]}
            for k in range(asks)
        ],
    }


def test_a_chat_retry_does_not_upload_the_asks_files_again() -> None:
    """30% of all calls (uploads and chats) fail with 503: every record still succeeds,
    and each file is uploaded successfully exactly once."""
    with MockUpstream("--seed", "21", "--fault-5xx", "0.3") as mock:
        messages = [
            AskMessage(
                batch="b", seq=i, record=Record.model_validate(record(i)), base_dir=str(DATA)
            )
            for i in range(20)
        ]
        ok_uploads: list[str] = []
        failed_chats: list[str] = []

        async def count(response: httpx.Response) -> None:
            path = response.request.url.path
            if path.endswith("/uploaded") and response.status_code == 200:
                ok_uploads.append(path)
            if path.endswith("/all-tools") and response.status_code >= 500:
                failed_chats.append(path)

        async def scenario() -> list[Any]:
            async with httpx.AsyncClient(event_hooks={"response": [count]}) as http:
                service = CallerService(caller_settings(mock), http=http)
                await service.start()
                return [await service.runner.run(m) for m in messages]

        outcomes = asyncio.run(scenario())
        assert all(o.ok for o in outcomes), [o.record.iErr for o in outcomes if not o.ok]
        assert failed_chats, "no chat failed: the test proves nothing"
        assert len(ok_uploads) == 20 * 2 * 2  # 20 records x 2 asks x (1 image + 1 file)
        assert mock.stats()["faults"]["5xx"] > 0


class SlowClient:
    """Answers each ask after `seconds`."""

    kind = "fake"

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    async def run_ask(
        self, state: ConversationState, ask: Ask, **_: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        self.calls += 1
        await asyncio.sleep(self.seconds)
        return {"message_id": f"m-{ask.id}"}, state


def test_a_conversation_past_its_deadline_ends_with_588_and_keeps_its_answers() -> None:
    client = SlowClient(0.2)
    runner = ConversationRunner(
        client_for=lambda kind: client, default_kind="fake", policy=RetryPolicy(), deadline=0.5
    )
    msg = AskMessage(
        batch="b",
        seq=0,
        record=Record.model_validate(
            {"id": "r", "asks": [{"id": f"a{i}", "content": "q"} for i in range(10)]}
        ),
    )
    started = time.monotonic()
    outcome = asyncio.run(runner.run(msg))
    assert time.monotonic() - started < 1.0
    err = outcome.record.iErr
    assert err is not None and err.code == 588 and "deadline" in err.message
    assert [a.message_id for a in outcome.record.answers or []] == ["m-a0", "m-a1"]
    assert err.message.startswith("ask a2:")


@pytest.mark.parametrize("deadline", [2.5, 0])
def test_a_long_conversation_is_never_run_twice_at_once_on_real_nsqd(
    tmp_path: Path, topic_prefix: str, deadline: float
) -> None:
    """nsqd caps TOUCH at --max-msg-timeout (here 4 s) and then redelivers. A conversation
    of 8 asks x 0.7 s outlives that: with the deadline (2.5 s) it ends first and is run
    once; without one (the control) a second run starts while the first goes on."""
    with (
        run_nsqd(tmp_path, None, "--max-msg-timeout=4s", "--msg-timeout=2s") as nsqd,
        MockUpstream("--seed", "5", "--latency-ms", "700") as mock,
    ):
        bus_settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix, touch_interval=0.5
        )
        settings = caller_settings(
            mock, conversation_deadline=deadline, **bus_settings.model_dump()
        )
        starts: list[float] = []
        results: list[ResultMessage] = []
        long_record = {"id": "long", "asks": [{"id": f"a{k}", "content": "q"} for k in range(8)]}

        async def scenario() -> None:
            service = CallerService(settings)
            handle = service.handle

            async def counted(msg: AskMessage, delivery: Delivery) -> None:
                starts.append(time.monotonic())
                await handle(msg, delivery)

            service.handle = counted  # type: ignore[method-assign]
            bus = NsqBus(bus_settings, service="caller")
            await service.start()
            service.register(bus)

            async def collect(msg: ResultMessage, delivery: Delivery) -> None:
                results.append(msg)

            bus.subscribe(bus.topics.results, "sink", ResultMessage, collect)
            await bus.start()
            ask = AskMessage(batch="b", seq=0, record=Record.model_validate(long_record))
            await bus.publish(bus.topics.asks, ask)
            end = time.monotonic() + (9 if deadline else 12)
            while time.monotonic() < end and not (deadline == 0 and len(starts) >= 2):
                await asyncio.sleep(0.1)
            await bus.stop(grace=0.5)
            await service.close()

        asyncio.run(scenario())
        if deadline:
            assert len(starts) == 1
            assert len(results) == 1
            err = results[0].record.iErr
            assert err is not None and err.code == 588
            assert mock.stats()["calls"].get("all-tools", 0) <= 4
        else:
            assert len(starts) >= 2  # redelivered while the first run was still going
            assert starts[1] - starts[0] < 8 * 0.7


def test_a_redelivered_ask_whose_result_was_published_is_not_paid_again() -> None:
    """nsqd redelivers an in-flight ask after a restart with the same message id: the caller
    that already published its result finishes it without calling the upstream."""
    with MockUpstream("--seed", "3") as mock:
        msg = AskMessage(
            batch="b", seq=0, record=Record.model_validate(record(0, asks=1)), base_dir=str(DATA)
        )

        class Redelivery:
            id = "0a1b2c3d4e5f6071"
            attempts = 1

            def touch(self) -> None:
                return None

        async def scenario() -> int:
            from gpt4batch.common.memory_bus import MemoryBus
            from gpt4batch.common.topics import Topics

            bus = MemoryBus(topics=Topics("t"), record=True)
            service = CallerService(caller_settings(mock))
            await service.start()
            service.register(bus)
            try:
                await service.handle(msg, Redelivery())
                await service.handle(msg, Redelivery())  # the same NSQ message again
                second = Redelivery()
                second.id = "ffffffffffffffff"  # a new message (e.g. ingest --fix): runs
                await service.handle(msg, second)
            finally:
                await service.close()
            return len(bus.published[bus.topics.results])

        before = mock.stats()["total_calls"]
        results = asyncio.run(scenario())
        calls = mock.stats()["total_calls"] - before
    assert results == 2
    assert calls == 2 * 3  # two runs of two uploads + one chat; the redelivery paid nothing


class MisshapenSecondAnswer:
    """Answers ask a1 with a `contents` that is not a list (the chat answer shape breaks)."""

    kind = "fake"

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def run_ask(
        self, state: ConversationState, ask: Ask, **_: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        self.calls.append(ask.id)
        if ask.id == "a1":
            return {"message_id": "m-a1", "contents": "not a list"}, state
        return {"message_id": f"m-{ask.id}"}, state


def test_an_answer_of_the_wrong_shape_repeats_only_its_call_and_fails_the_record() -> None:
    """It used to be raised out of the conversation: the message was requeued and every
    earlier ask of the record paid again, up to the bus's max attempts."""
    client = MisshapenSecondAnswer()
    runner = ConversationRunner(
        client_for=lambda kind: client,
        default_kind="fake",
        policy=RetryPolicy(retries=2, base_delay=0.001, max_delay=0.001),
    )
    msg = AskMessage(
        batch="b",
        seq=0,
        record=Record.model_validate(
            {"id": "r", "asks": [{"id": f"a{i}", "content": "q"} for i in range(3)]}
        ),
    )
    outcome = asyncio.run(runner.run(msg))
    assert client.calls == ["a0", "a1", "a1", "a1"]
    err = outcome.record.iErr
    assert err is not None and err.code == 596
    assert err.message.startswith("ask a1:") and "contents" in err.message
    assert [a.message_id for a in outcome.record.answers or []] == ["m-a0"]
