"""chatgpt-service client against the simulator."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.messages import Ask, ChatResponse
from gpt4batch.common.upstreams import ChatgptServiceClient, ConversationState, make_client

from ._helpers import MockUpstream, fault, run, service_config


def test_two_turns_carry_history(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], ConversationState]:
        client = make_client(service_config(mock), http)
        assert isinstance(client, ChatgptServiceClient)
        _, state = await client.run_ask(ConversationState(), Ask(id="1", content="你是哪里人？"))
        return await client.run_ask(state, Ask(id="2", content="讲个故事"))

    answer, state = run(go)
    assert answer["code"] == 0 and answer["msg"] == "ok"
    assert "讲个故事" in answer["data"]["response"] and "turns=3" in answer["data"]["response"]
    assert answer["message_id"].startswith("local-")
    assert ChatResponse.model_validate(answer).message_id == answer["message_id"]
    assert len(state.messages) == 4 and state.messages[-1]["role"] == "assistant"


def test_nonzero_code_is_final(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        client = ChatgptServiceClient(service_config(mock), http)
        await client.run_ask(ConversationState(), Ask(id="1", content="please code-error"))

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 594
    assert "code 1001" in info.value.message and "mock error requested" in info.value.message


def test_images_are_refused(mock: MockUpstream) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        client = ChatgptServiceClient(service_config(mock), http)
        await client.run_ask(ConversationState(), Ask(id="1", content="x", images=["a.png"]))

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 592


@pytest.mark.parametrize(("kind", "status"), [("5xx", 503), ("bad-json", 596), ("drop", 597)])
def test_faults_are_retryable(mock: MockUpstream, kind: str, status: int) -> None:
    async def go(http: httpx.AsyncClient) -> None:
        client = ChatgptServiceClient(service_config(mock), http)
        await client.run_ask(ConversationState(), Ask(id="1", content="hi"))

    with pytest.raises(RetryableError) as info:
        run(go, **fault(kind))
    assert info.value.status == status
