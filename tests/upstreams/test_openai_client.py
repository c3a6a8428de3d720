"""OpenAI-compatible client against the simulator: plain, SSE, inline files, faults."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.messages import Ask, ChatResponse
from gpt4batch.common.upstreams import ConversationState, OpenAIClient, Sampling

from ._helpers import MockUpstream, delta, fault, openai_config, run


def two_turns(mock: MockUpstream, **config_kw: Any) -> list[tuple[dict[str, Any], Any]]:
    async def go(http: httpx.AsyncClient) -> list[tuple[dict[str, Any], Any]]:
        client = OpenAIClient(openai_config(mock, **config_kw), http)
        state, out = ConversationState(), []
        for n, text in enumerate(["say this is a test", "again"]):
            answer, state = await client.run_ask(state, Ask(id=f"a{n}", content=text))
            out.append((answer, state))
        return out

    return run(go)


def content(answer: dict[str, Any]) -> str:
    return str(answer["choices"][0]["message"]["content"])


def test_plain_completion_grows_the_messages_list(mock: MockUpstream) -> None:
    (first, _), (second, s2) = two_turns(mock, sampling=Sampling(temperature=0.7, top_p=1))
    assert first["object"] == "chat.completion"
    assert first["message_id"] == first["id"] and first["id"].startswith("chatcmpl-")
    assert [m["role"] for m in s2.messages] == ["user", "assistant", "user", "assistant"]
    assert s2.messages[1]["content"] == content(first)
    assert "turns=1" in content(first) and "turns=3" in content(second)
    assert s2.parent_message_id == second["id"]
    assert ChatResponse.model_validate(second).message_id == second["id"]


def test_streamed_answer_is_assembled_like_the_plain_one(mock: MockUpstream) -> None:
    plain = two_turns(mock)
    streamed = two_turns(mock, stream=True)
    for (p, _), (s, _) in zip(plain, streamed, strict=True):
        assert content(s) == content(p)
        assert s["streamed"] is True and s["message_id"].startswith("chatcmpl-")
        assert s["choices"][0]["finish_reason"] == "stop"


def test_go_gpt_server_chat_endpoint_streams(mock: MockUpstream) -> None:
    before = mock.stats()
    ((answer, _), _) = two_turns(mock, stream=True, chat_url=f"{mock.url}/chat")
    assert "say this is a test" in content(answer)
    assert delta(before, mock.stats(), "calls", "chat.completions") == 2


def test_images_and_text_files_go_inline(mock: MockUpstream, data_dir: str) -> None:
    ask = Ask(id="a", content="look", images=["1.jpeg"], files=["example.txt"])

    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], ConversationState]:
        client = OpenAIClient(openai_config(mock), http)
        return await client.run_ask(ConversationState(), ask, base_dir=data_dir)

    answer, state = run(go)
    parts = state.messages[0]["content"]
    assert [p["type"] for p in parts] == ["text", "text", "image_url"]
    assert parts[1]["text"].startswith("File example.txt:\n")
    assert parts[2]["image_url"]["url"].startswith("data:image/jpeg;base64,/9j/")
    assert "images=1" in content(answer)


def test_binary_file_is_refused_before_any_call(mock: MockUpstream, tmp_path: Path) -> None:
    (tmp_path / "x.bin").write_bytes(b"\x00\x01")
    calls: list[str] = []

    async def limiter(endpoint: str) -> None:
        calls.append(endpoint)

    async def go(http: httpx.AsyncClient) -> None:
        client = OpenAIClient(openai_config(mock), http, before_call=limiter)
        await client.run_ask(ConversationState(), Ask(id="a", content="x", files=["x.bin"]),
                             base_dir=str(tmp_path))  # fmt: skip

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 592 and "x.bin" in info.value.message
    assert calls == []


def test_completions_and_models(mock: MockUpstream) -> None:
    calls: list[str] = []

    async def limiter(endpoint: str) -> None:
        calls.append(endpoint)

    async def go(http: httpx.AsyncClient) -> tuple[dict[str, Any], list[str]]:
        client = OpenAIClient(openai_config(mock), http, before_call=limiter)
        return await client.completions("Say", suffix="!", max_tokens=50), await client.models()

    completion, models = run(go)
    assert completion["object"] == "text_completion"
    assert completion["choices"][0]["text"].endswith("Say!")
    assert 0 < completion["usage"]["completion_tokens"] <= 50
    assert "gpt-3.5-turbo" in models
    assert calls == ["completions", "models"]


def test_truncated_stream_is_retryable(mock: MockUpstream) -> None:
    with pytest.raises(RetryableError) as info:
        run(lambda http: _one(mock, http, stream=True), **fault("truncate"))
    assert info.value.status == 596 and "[DONE]" in info.value.message


@pytest.mark.parametrize(
    ("kind", "stream", "status"),
    [
        ("5xx", False, 503),
        ("5xx", True, 503),
        ("bad-json", False, 596),
        ("drop", True, 597),
        ("drop", False, 597),
    ],
)
def test_faults_are_retryable(mock: MockUpstream, kind: str, stream: bool, status: int) -> None:
    with pytest.raises(RetryableError) as info:
        run(lambda http: _one(mock, http, stream=stream), **fault(kind))
    assert info.value.status == status


def test_hang_is_a_timeout(mock: MockUpstream) -> None:
    with pytest.raises(RetryableError) as info:
        run(lambda http: _one(mock, http, stream=True, read_timeout=0.3), **fault("hang"))
    assert info.value.status == 598


def test_wrong_token_is_final_and_hidden(mock: MockUpstream) -> None:
    secret = "sk-openai-SECRET-99"
    with pytest.raises(FinalError) as info:
        run(lambda http: _one(mock, http, access_token=secret))
    assert info.value.status == 401
    assert secret not in str(info.value) and secret not in repr(info.value)


async def _one(mock: MockUpstream, http: httpx.AsyncClient, **config_kw: Any) -> None:
    config = openai_config(mock, **config_kw)
    await OpenAIClient(config, http).run_ask(ConversationState(), Ask(id="a", content="hi"))


@pytest.mark.parametrize("kind", ["dev-zero", "fifo"])
def test_inlined_files_that_are_not_regular_are_refused_without_hanging(
    mock: MockUpstream, tmp_path: Path, kind: str
) -> None:
    if kind == "fifo":
        fifo = tmp_path / "pipe.txt"
        os.mkfifo(fifo)  # no writer: a blocking open() would never return
        ask = Ask(id="a", content="x", files=[str(fifo)])
    else:
        ask = Ask(id="a", content="x", images=["/dev/zero"])

    async def go(http: httpx.AsyncClient) -> None:
        client = OpenAIClient(openai_config(mock), http)
        await asyncio.wait_for(client.run_ask(ConversationState(), ask), timeout=10)

    with pytest.raises(FinalError) as info:
        run(go)
    assert info.value.status == 590 and "not a regular file" in info.value.message
