"""One message-size limit in every mode: the settings, the in-memory bus, NSQ and the stack."""

from __future__ import annotations

import asyncio

import pytest

from gpt4batch.cli.stack.plan import StackOptions
from gpt4batch.common.errors import MessageTooLarge
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import DEFAULT_MAX_MSG_SIZE, BaseServiceSettings
from tests.support.nsq_servers import Nsqd


def test_every_mode_has_the_same_default_limit() -> None:
    assert BaseServiceSettings().max_msg_size == DEFAULT_MAX_MSG_SIZE == 1024 * 1024
    assert MemoryBus().max_msg_size == DEFAULT_MAX_MSG_SIZE
    assert StackOptions.__dataclass_fields__["max_msg_size"].default == DEFAULT_MAX_MSG_SIZE


def test_a_body_over_the_limit_is_refused_alike_in_memory_and_on_nsqd(
    nsqd: Nsqd, topic_prefix: str
) -> None:
    limit = 4096
    settings = BaseServiceSettings(
        nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix, max_msg_size=limit
    )

    async def scenario() -> None:
        nsq = NsqBus(settings, service="t")
        await nsq.start()
        memory = MemoryBus(topics=settings.topics, max_msg_size=settings.max_msg_size)
        try:
            for bus in (memory, nsq):
                await bus.publish(bus.topics.asks, b"x" * limit)  # at the limit: fine
                with pytest.raises(MessageTooLarge, match=f"{limit}-byte limit") as caught:
                    await bus.publish(bus.topics.asks, b"x" * (limit + 1))
                assert caught.value.size == limit + 1
        finally:
            await nsq.stop(1)

    asyncio.run(scenario())
