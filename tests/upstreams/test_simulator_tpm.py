"""The simulator's token accounting (services/mock_upstream/tpm.py) and the client's
token meter against it: usage reported, TPM per key with OpenAI's 429 headers."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from gpt4batch.common.errors import RetryableError
from gpt4batch.common.messages import Ask
from gpt4batch.common.tokens import estimate_prompt_tokens, text_tokens
from gpt4batch.common.upstreams import ConversationState, Gpt4ApiClient, OpenAIClient, Sampling
from gpt4batch.services.caller.limits.tokens import TokenLimit, parse_duration
from gpt4batch.services.mock_upstream.keys import key_id

from ._helpers import MockUpstream, gpt4api_config, openai_config, run

CHAT = "/v1/chat/completions"


def chat_body(text: str, max_tokens: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "messages": [{"role": "user", "content": text}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return body


def test_usage_is_reported_and_counted_per_key() -> None:
    with (
        MockUpstream("--answer-tokens", "40") as mock,
        httpx.Client(base_url=mock.url, headers=mock.headers) as http,
    ):
        body = chat_body("hello " * 10)
        answer = http.post(CHAT, json=body).json()
        usage = answer["usage"]
        assert usage["prompt_tokens"] == estimate_prompt_tokens(body)
        text = answer["choices"][0]["message"]["content"]
        assert usage["completion_tokens"] == text_tokens(text) == 40
        cut = http.post(CHAT, json=chat_body("hi", max_tokens=7)).json()["usage"]
        assert cut["completion_tokens"] == 7  # the answer stops at max_tokens
        gpt4api = http.post("/standard/all-tools", json={"message": "hi", "model": "gpt-4"})
        assert "usage" not in gpt4api.json()  # like gpt4api.plus: no usage
        keyed = http.get("/stats").json()["key_tokens"]
    assert list(keyed) == [key_id(mock.token)]  # named by a fingerprint, not the key
    mine = keyed[key_id(mock.token)]
    assert mine["calls"] == 2
    assert mine["total_tokens"] == usage["total_tokens"] + cut["total_tokens"]


def test_tpm_refuses_with_openai_headers_and_refused_calls_take_nothing() -> None:
    with (
        MockUpstream("--tpm", "300", "--answer-tokens", "80") as mock,
        httpx.Client(base_url=mock.url, headers=mock.headers) as http,
    ):
        replies = [http.post(CHAT, json=chat_body("q")) for _ in range(5)]
        stats = http.get("/stats").json()
    accepted = [r for r in replies if r.status_code == 200]
    refused = [r for r in replies if r.status_code == 429]
    call = estimate_prompt_tokens(chat_body("q")) + 80  # 87
    assert len(accepted) == 3 and len(refused) == 2  # 3 calls <= 300 < 4 calls
    for reply in refused:
        assert int(reply.headers["retry-after"]) >= 1
        assert reply.headers["x-ratelimit-limit-tokens"] == "300"
        assert int(reply.headers["x-ratelimit-remaining-tokens"]) == 300 - 3 * call
        assert 0 < (parse_duration(reply.headers["x-ratelimit-reset-tokens"]) or 0) <= 60
        assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert accepted[0].headers["x-ratelimit-remaining-tokens"] == str(300 - call)
    mine = stats["key_tokens"][key_id(mock.token)]
    assert mine["total_tokens"] == mine["max_tokens_in_window"] == 3 * call
    assert mine["rate_limited"] == 2 and stats["rate_limited"] == 2


def test_client_meter_keeps_a_key_under_its_tpm_without_a_429() -> None:
    """Calls through a TokenLimit at the simulator's own limit (500 tokens per 4 s here):
    10 calls of 107 tokens would pass it twice over, yet every one is answered, none
    refused, and the key's tokens in any window stay within the limit."""
    with MockUpstream("--tpm", "500", "--tpm-window", "4", "--answer-tokens", "100") as mock:

        async def go(http: httpx.AsyncClient) -> list[int]:
            meter = TokenLimit(500, completion_estimate=150, window=4)
            client = OpenAIClient(openai_config(mock), http, tokens=meter)
            used = []
            for n in range(10):
                answer, _ = await client.run_ask(ConversationState(), Ask(id=f"a{n}", content="q"))
                used.append(answer["usage"]["total_tokens"])
            assert meter.window_tokens() <= 500  # corrected from the usage
            return used

        used = run(go)
        stats = mock.stats()
    mine = stats["key_tokens"][key_id(mock.token)]
    assert stats["rate_limited"] == 0 and mine["calls"] == 10
    assert mine["total_tokens"] == sum(used) > 2 * 500


def test_client_honours_the_429_headers_then_waits_for_room() -> None:
    """A key already used elsewhere: the first call gets 429; the meter pauses for the
    `retry-after` the simulator sent, and the retry after the pause is answered."""
    with MockUpstream("--tpm", "200", "--tpm-window", "3", "--answer-tokens", "60") as mock:
        with httpx.Client(base_url=mock.url, headers=mock.headers) as http:
            for _ in range(3):  # another user of the key: 3 x 68 tokens
                http.post(CHAT, json=chat_body("q"))
        assert mock.stats()["rate_limited"] == 1

        async def go(http: httpx.AsyncClient) -> float:
            pauses: list[float] = []
            meter = TokenLimit(0, on_pause=pauses.append)  # no limit of our own
            client = OpenAIClient(openai_config(mock, sampling=Sampling()), http, tokens=meter)
            with pytest.raises(RetryableError) as refused:
                await client.run_ask(ConversationState(), Ask(id="a", content="q"))
            assert refused.value.status == 429 and pauses and meter.paused_for() > 0
            # The retry goes through the pause first: by then the key has room again.
            await client.run_ask(ConversationState(), Ask(id="a", content="q"))
            return pauses[0]

        pause = run(go, timeout=90)
        stats = mock.stats()
    assert 1 <= pause <= 3
    assert stats["rate_limited"] == 2  # the other user's and ours, not one more
    assert stats["key_tokens"][key_id(mock.token)]["calls"] == 3


def test_gpt4api_calls_take_no_metered_usage() -> None:
    """gpt4api.plus reports no usage: the reservation (estimate: the message's text and
    the completion estimate) stands."""
    with MockUpstream() as mock:

        async def go(http: httpx.AsyncClient) -> int:
            meter = TokenLimit(100_000, completion_estimate=500)
            client = Gpt4ApiClient(gpt4api_config(mock), http, tokens=meter)
            await client.run_ask(ConversationState(), Ask(id="a", content="hello there"))
            return meter.window_tokens()

        tokens = run(go)
    assert tokens == 500 + text_tokens("hello there")
