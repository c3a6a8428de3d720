"""The simulator serves the four Batch API endpoints in the real API's shapes (the official
SDK's types parse them) with `usage`, and the OpenAI client sends a body to them whole."""

from __future__ import annotations

import json
from typing import Any

import httpx
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from gpt4batch.common.upstreams import OpenAIClient, UpstreamConfig

from ._helpers import MockUpstream, run


def post(mock: MockUpstream, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{mock.url}{path}", headers=mock.headers, timeout=10, json=body)


def test_responses_have_the_api_shape_and_usage_details(mock: MockUpstream) -> None:
    body = {"model": "gpt-5-nano", "instructions": "Be brief.", "input": "Where is O-1?",
            "reasoning": {"effort": "low"}, "max_output_tokens": 160}  # fmt: skip
    answer = Response.model_validate(post(mock, "/v1/responses", body).json())

    assert answer.object == "response" and answer.status == "completed"
    assert "Where is O-1?" in answer.output_text and answer.instructions == "Be brief."
    usage = answer.usage
    assert usage is not None and usage.total_tokens == usage.input_tokens + usage.output_tokens
    assert 0 < usage.output_tokens_details.reasoning_tokens <= usage.output_tokens <= 160
    assert usage.input_tokens_details.cached_tokens == 0  # a short prompt: nothing cached


def test_embeddings_chat_and_completions_have_the_api_shapes(mock: MockUpstream) -> None:
    embedded = post(mock, "/v1/embeddings", {"model": "e", "input": ["a", "b"], "dimensions": 4})
    embeddings = CreateEmbeddingResponse.model_validate(embedded.json())
    assert [len(e.embedding) for e in embeddings.data] == [4, 4]
    assert embeddings.usage.prompt_tokens == embeddings.usage.total_tokens > 0
    assert "completion_tokens" not in embedded.json()["usage"]

    long = "word " * 5000  # over 1,024 tokens: part of it is reported cached
    chat = ChatCompletion.model_validate(
        post(mock, "/v1/chat/completions",
             {"model": "m", "n": 3, "messages": [{"role": "user", "content": long}]}).json()
    )  # fmt: skip
    assert [c.index for c in chat.choices] == [0, 1, 2]
    assert chat.usage is not None and chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens > 0

    completion = Completion.model_validate(
        post(mock, "/v1/completions", {"model": "m", "prompt": "Once"}).json()
    )
    assert completion.object == "text_completion" and "Once" in completion.choices[0].text
    assert completion.usage is not None and completion.usage.total_tokens > 0


def test_a_body_without_what_the_endpoint_needs_is_a_400_naming_it(mock: MockUpstream) -> None:
    needs = {"/v1/embeddings": "input", "/v1/responses": "input", "/v1/completions": "prompt",
             "/v1/chat/completions": "messages"}  # fmt: skip
    for path, field in needs.items():
        answer = post(mock, path, {"model": "m"})
        assert answer.status_code == 400, path
        assert answer.json()["error"]["param"] == field


def test_the_openai_client_sends_every_field_of_a_body_to_its_path(mock: MockUpstream) -> None:
    body = {"model": "gpt-4o-mini", "input": "hi", "seed": 7, "tools": [],
            "text": {"verbosity": "low"}, "metadata": {"k": "v"}}  # fmt: skip

    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], bytes | None]:
        config = UpstreamConfig(kind="openai", base_url=mock.url, access_token=mock.token)
        return await OpenAIClient(config, http).call_endpoint("/v1/responses", body)

    answer, received = run(go)
    assert received is not None and json.loads(received) == answer  # the bytes, kept
    assert answer["object"] == "response" and answer["metadata"] == {"k": "v"}
    assert answer["text"]["verbosity"] == "low"  # the simulator echoes what it was sent
    assert "message_id" not in answer  # the answer as the upstream sent it


def test_a_streamed_chat_request_is_assembled_with_the_usage_of_its_last_chunk(
    mock: MockUpstream,
) -> None:
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "stream me"}]}  # fmt: skip

    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], bytes | None]:
        config = UpstreamConfig(kind="openai", base_url=mock.url, access_token=mock.token)
        return await OpenAIClient(config, http).call_endpoint("/v1/chat/completions", body)

    answer, received = run(go)
    assert received is None  # a stream has no one body to keep: assembled instead
    completion = ChatCompletion.model_validate(answer)
    assert "stream me" in (completion.choices[0].message.content or "")
    assert completion.usage is not None and completion.usage.completion_tokens > 0
