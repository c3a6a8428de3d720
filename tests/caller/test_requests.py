"""A Batch API request in an ask (`AskMessage.request`), on the caller's side (no NSQ): sent
whole to an OpenAI-style client, turned into an ask for a chat-only kind, or answered
with an error result — never a call — when the kind cannot serve its endpoint."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from gpt4batch.common.messages import Ask, AskMessage, EndpointRequest, Record
from gpt4batch.common.received_answer import kept, received_json
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.services.caller.conversation import ConversationRunner
from gpt4batch.services.caller.feed import feed_bodies

#: An upstream's answer as it sent it (pretty-printed, as OpenAI does).
RECEIVED = b"""{
  "id": "resp_1",
  "object": "response",
  "usage": {"input_tokens": 5, "output_tokens": 7, "total_tokens": 12,
            "input_tokens_details": {"cached_tokens": 2},
            "output_tokens_details": {"reasoning_tokens": 3}}
}
"""


class Client:
    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.sent: list[tuple[str, dict[str, Any]]] = []
        self.asked: list[str] = []

    async def call_endpoint(
        self, endpoint: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], bytes]:
        self.sent.append((endpoint, body))
        return json.loads(RECEIVED), RECEIVED

    async def run_ask(
        self, state: ConversationState, ask: Ask, **kw: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        self.asked.append(ask.content)
        return {"message_id": "m1", "contents": []}, state


def run(kind: str, endpoint: str, body: dict[str, Any]) -> tuple[Any, Client]:
    client = Client(kind)
    runner = ConversationRunner(
        client_for=lambda _: client, default_kind=kind, policy=RetryPolicy(retries=0),
        enable_download=False,
    )  # fmt: skip
    record = Record(id="r1", asks=[Ask(id="request", content="")])
    request = EndpointRequest(endpoint=endpoint, body=body)  # type: ignore[arg-type]
    msg = AskMessage(batch="b", seq=0, record=record, request=request)
    return asyncio.run(runner.run(msg)), client


def test_an_openai_client_gets_the_body_whole_and_its_answer_is_kept() -> None:
    body = {"model": "m", "input": "hi", "tools": [], "seed": 1}
    outcome, client = run("openai", "/v1/responses", body)
    assert client.sent == [("/v1/responses", body)]
    [answer] = outcome.answers
    assert outcome.ok and received_json(answer) == RECEIVED.decode().replace("\n", "").strip()
    line = outcome.usage.as_line()
    assert (line["prompt_tokens"], line["completion_tokens"]) == (5, 7)
    assert (line["cached_tokens"], line["reasoning_tokens"]) == (2, 3)


def test_a_chat_only_kind_answers_other_endpoints_with_an_error_and_no_call() -> None:
    outcome, client = run("gpt4api", "/v1/embeddings", {"model": "e", "input": "x"})
    assert not outcome.ok and outcome.error.code == 584
    assert "/v1/embeddings" in outcome.error.message
    assert client.sent == [] and client.asked == []


def test_a_chat_only_kind_runs_a_chat_request_as_an_ask() -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    outcome, client = run("gpt4api", "/v1/chat/completions", {"model": "m", "messages": messages})
    assert outcome.ok and client.sent == []
    assert client.asked == ["System: Be brief.\n\nUser: 2+2?"]


def test_the_feed_gets_an_answer_kept_as_received_as_the_object_it_is() -> None:
    answer = json.loads(RECEIVED)
    [body] = feed_bodies([Ask(id="request", content="")], [kept(answer, RECEIVED)], "/d")
    assert json.loads(body)["answer"] == answer
