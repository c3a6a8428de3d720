"""Results too large for one NSQ message reach the output in pieces (real nsqd, 1 MiB)."""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from gpt4batch.common.bus import Delivery
from gpt4batch.common.errors import Requeue
from gpt4batch.common.messages import Ask, AskMessage, BatchManifest, Record, ResultMessage
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.result_parts import MAX_PARTS, PartAssembler, TooLarge, split_result
from gpt4batch.common.settings import BaseServiceSettings, load
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings
from tests.support.nsq_servers import Nsqd

MIB = 1024 * 1024


class BigAnswers:
    """Each answer carries `size` bytes of text (unlike the simulator's short ones)."""

    kind = "gpt4api"

    def __init__(self, size: int) -> None:
        self.size = size

    async def run_ask(
        self, state: ConversationState, ask: Ask, **_: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        text = "".join(random.Random(ask.id).choices('abcdé\n"\\ ', k=self.size))
        return {"message_id": f"m-{ask.id}", "text": text}, state


def big_result(size: int) -> ResultMessage:
    answers = [{"message_id": f"m{i}", "text": "x" * (size // 4)} for i in range(4)]
    record = {"id": "big", "asks": [{"id": "a", "content": "c"}], "answers": answers}
    return ResultMessage(batch="b", seq=3, record=Record.model_validate(record))


class FakeDelivery:
    id = "0"
    attempts = 1

    def touch(self) -> None:
        pass


def test_pieces_in_any_order_are_delivered_once_whole() -> None:
    result = big_result(3 * MIB)
    body = result.model_dump_json().encode()
    parts = split_result(result, body, MIB)
    assert 3 <= len(parts) <= 5
    assert all(len(p.model_dump_json()) <= MIB for p in parts)
    got: list[ResultMessage] = []

    async def deliver(msg: ResultMessage, delivery: Delivery) -> None:
        got.append(msg)

    async def scenario() -> None:
        assembler = PartAssembler(deliver)
        shuffled = random.Random(1).sample(parts, len(parts))
        await asyncio.gather(*(assembler.handle(p, FakeDelivery()) for p in shuffled))

    asyncio.run(scenario())
    assert len(got) == 1 and got[0].model_dump_json().encode() == body


def test_a_missing_piece_gives_the_others_back_and_oversize_is_refused() -> None:
    result = big_result(2 * MIB)
    parts = split_result(result, result.model_dump_json().encode(), MIB)

    async def deliver(msg: ResultMessage, delivery: Delivery) -> None:
        raise AssertionError("incomplete result delivered")

    async def scenario() -> None:
        await PartAssembler(deliver, wait=0.2).handle(parts[0], FakeDelivery())

    with pytest.raises(Requeue):
        asyncio.run(scenario())
    with pytest.raises(TooLarge, match=f"at most {MAX_PARTS}"):
        split_result(result, b"x" * (MAX_PARTS * 4096), 4096)
    assert base64.b64decode(parts[0].data)  # pieces carry bytes, whatever the text


def test_a_result_over_the_message_limit_reaches_the_sink_output(
    nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """100 asks with 30 KB answers: a ~3 MB result against nsqd's default 1 MiB limit."""
    out = tmp_path / "out.jsonl"
    bus_settings = BaseServiceSettings(
        nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
    )
    caller_settings = CallerSettings(
        access_token=SecretStr("sk-x"), base_url="http://127.0.0.1:9", **bus_settings.model_dump()
    )
    sink_settings = load(
        SinkSettings, out=str(out), nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
    )
    asks = [{"id": f"a{i}", "content": f"q{i}"} for i in range(100)]
    small = {"id": "small", "asks": asks[:1]}

    async def scenario() -> None:
        caller = CallerService(caller_settings)
        caller.runner.client_for = lambda kind: BigAnswers(30_000)
        sink = SinkService(sink_settings)
        caller_bus = NsqBus(bus_settings, service="caller")
        sink_bus = NsqBus(sink_settings, service="sink")
        await caller.start()
        await sink.start()
        caller.register(caller_bus)
        sink.register(sink_bus)
        await caller_bus.start()
        await sink_bus.start()
        await caller_bus.publish_many(
            caller_bus.topics.asks,
            [
                AskMessage(
                    batch="b", seq=0, record=Record.model_validate({"id": "big", "asks": asks})
                ),
                AskMessage(batch="b", seq=1, record=Record.model_validate(small)),
            ],
        )
        await caller_bus.publish(caller_bus.topics.batches, BatchManifest(batch="b", total=2))
        end = time.monotonic() + 30
        while time.monotonic() < end and not out.with_name("out.done").exists():
            await asyncio.sleep(0.1)
        await caller_bus.stop(grace=1)
        await sink_bus.stop(grace=1)
        await caller.close()
        await sink.close()

    asyncio.run(scenario())
    lines = out.read_bytes().splitlines()
    records = {json.loads(line)["id"]: json.loads(line) for line in lines}
    assert len(lines) == 2 and set(records) == {"big", "small"}
    big = records["big"]
    assert big.get("iErr") is None
    assert len(big["answers"]) == 100
    assert max(len(line) for line in lines) > 2 * MIB
    expected, _ = asyncio.run(
        BigAnswers(30_000).run_ask(ConversationState(), Ask(id="a7", content="q"))
    )
    assert big["answers"][7]["text"] == expected["text"]
