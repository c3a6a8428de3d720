"""A Batch API line's earlier messages reach every upstream kind (caller side, no NSQ)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpt4batch.common.messages import Ask, AskMessage, Record
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.services.caller.conversation import ConversationRunner

HISTORY = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": [{"type": "text", "text": "2+2?"}]},
    {"role": "assistant", "content": "4"},
]


class Seen:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.calls: list[tuple[tuple[dict[str, Any], ...], str]] = []

    async def run_ask(
        self, state: ConversationState, ask: Ask, **kw: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        self.calls.append((state.messages, ask.content))
        return {"message_id": "m1"}, state


@pytest.mark.parametrize("kind", ["openai", "gpt4api"])
def test_history_goes_as_messages_or_as_text(kind: str) -> None:
    client = Seen(kind)
    runner = ConversationRunner(
        client_for=lambda _: client, default_kind=kind, policy=RetryPolicy(), enable_download=False
    )
    record = Record(id="r", asks=[Ask(id="request", content="and 3+3?")])
    msg = AskMessage(batch="b", seq=0, record=record, history=HISTORY)
    outcome = asyncio.run(runner.run(msg))

    assert outcome.ok and outcome.record.asks[0].content == "and 3+3?"  # the output keeps it
    [(messages, content)] = client.calls
    if kind == "openai":
        assert (list(messages), content) == (HISTORY, "and 3+3?")
    else:
        assert messages == tuple(HISTORY)  # unused by this kind
        assert content == "System: Be brief.\n\nUser: 2+2?\n\nAssistant: 4\n\nUser: and 3+3?"
