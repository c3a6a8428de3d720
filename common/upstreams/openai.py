"""OpenAI-compatible upstreams: app4gpt (seed 002), go-gpt-server `/chat` (seed 004), any
OpenAI-style base URL. A conversation is the growing `messages` list in the state."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import httpx

from gpt4batch.common.endpoints import CHAT, path_of
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.messages import Ask, AskOverrides
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.base import (
    Answer,
    ConversationState,
    HttpBase,
    check_host,
    start_call,
)
from gpt4batch.common.upstreams.config import UpstreamConfig
from gpt4batch.common.upstreams.inline import user_message
from gpt4batch.common.upstreams.transport import (
    REMAINING_TOKENS,
    RESET_TOKENS,
    read_httpx,
    read_lines,
)

DEFAULT_MODEL = "gpt-3.5-turbo"


def v1_url(config: UpstreamConfig, path: str) -> str:
    """`<base>/v1/<path>` whether the base URL ends in `/v1` (as every OpenAI SDK's does)
    or not: `http://host` and `http://host/v1` both reach `http://host/v1/<path>`."""
    if config.base_url is None:
        raise ConfigError("an OpenAI-style upstream needs a base URL (--base-url)")
    base = config.base_url.rstrip("/")
    base = base.removesuffix("/v1")
    return f"{base}/v1/{path}"


class OpenAIClient(HttpBase):
    """`/v1/chat/completions` (plain or SSE), `/v1/completions`, `/v1/embeddings`,
    `/v1/responses`, `/v1/models`."""

    kind = "openai"

    def chat_url(self, config: UpstreamConfig) -> str:
        return config.chat_url or v1_url(config, "chat/completions")

    async def chat_completion(
        self, messages: list[dict[str, Any]], *, config: UpstreamConfig | None = None
    ) -> Answer:
        """One completion of `messages`; a streamed answer is assembled into one dict.

        The answer is the completion JSON (for streams, a completion-like dict with
        `"object": "chat.completion"`) plus `message_id` = the completion id.
        """
        config = config or self.config
        body: dict[str, Any] = {
            "model": config.model or DEFAULT_MODEL,
            "messages": messages,
            **config.sampling.as_body(),
        }
        if config.stream:
            body["stream"] = True
            answer = await self._stream(body, config)
        else:
            answer = await self.request_json(
                "chat", "POST", self.chat_url(config), config, json=body
            )
            if not isinstance(answer, dict):
                raise errors.bad_response("chat", "answer is not an object")
        content = _first_content(answer)
        if content is None:
            raise errors.bad_response("chat", "answer has no choices[0].message.content")
        answer.setdefault("message_id", answer.get("id"))
        return answer

    async def call_endpoint(
        self, endpoint: str, body: dict[str, Any]
    ) -> tuple[Answer, bytes | None]:
        """A Batch API request sent as it is: `body` whole to `endpoint`'s path on the
        upstream (chat: `--chat-url` if given). The answer parsed, and the bytes received
        (None for a chat stream, `"stream": true`, assembled into one `chat.completion`)."""
        config = self.config
        if endpoint == CHAT:
            if body.get("stream") is True:
                return await self._stream(body, config), None
            name, url = "chat", self.chat_url(config)
        else:
            name = path_of(endpoint)
            url = v1_url(config, name)
        answer, received = await self.request_json(name, "POST", url, config, raw=True, json=body)
        if not isinstance(answer, dict):
            raise errors.bad_response(name, "answer is not an object")
        return answer, received

    async def _stream(self, body: dict[str, Any], config: UpstreamConfig) -> Answer:
        check_host("chat", self.chat_url(config), config)
        meter = self.tokens
        ticket = await start_call(meter, self.before_call, "chat", body)
        headers = {**config.headers(), "Accept": "text/event-stream"}
        try:
            async with self.http.stream(
                "POST", self.chat_url(config), json=body, headers=headers, timeout=config.timeout()
            ) as response:
                limit = config.max_answer_bytes
                if response.status_code >= 300:
                    text = (await read_httpx(response, "chat", limit)).decode("utf-8", "replace")
                    if meter is not None and response.status_code == 429:
                        meter.rate_limited(
                            ticket,
                            response.headers.get("retry-after"),
                            response.headers.get(RESET_TOKENS),
                            response.headers.get(REMAINING_TOKENS),
                        )
                    raise errors.from_status(
                        response.status_code,
                        "chat",
                        text,
                        retry_after=response.headers.get("retry-after"),
                        secret=config.secret(),
                    )
                answer = await _assemble(read_lines(response, "chat", limit))
        except httpx.HTTPError as exc:
            raise errors.from_transport(exc, "chat") from None
        if ticket is not None:
            meter.settle(ticket, answer)  # type: ignore[union-attr]
        return answer

    async def run_ask(
        self,
        state: ConversationState,
        ask: Ask,
        *,
        base_dir: str | None = None,
        overrides: AskOverrides | None = None,
        uploaded: dict[str, Any] | None = None,
    ) -> tuple[Answer, ConversationState]:
        """Append the ask (images/text files inline) to the history and complete it."""
        config = self.config.with_overrides(overrides)
        user = user_message(ask, base_dir, config.max_upload_bytes, self.open_file)
        answer = await self.chat_completion([*state.messages, user], config=config)
        reply = {"role": "assistant", "content": _first_content(answer)}
        return answer, replace(
            state,
            parent_message_id=answer.get("message_id"),
            messages=(*state.messages, user, reply),
        )

    async def completions(self, prompt: str | list[str], **params: Any) -> Answer:
        """Legacy `/v1/completions` (`suffix`, `max_tokens`, … passed through)."""
        config = self.config
        body = {
            "model": config.model or DEFAULT_MODEL,
            "prompt": prompt,
            **config.sampling.as_body(),
        }
        body.update(params)
        answer = await self.request_json(
            "completions", "POST", v1_url(config, "completions"), config, json=body
        )
        if not isinstance(answer, dict) or not answer.get("choices"):
            raise errors.bad_response("completions", "answer has no choices")
        return answer

    async def models(self) -> list[str]:
        """Ids from `/v1/models`."""
        answer = await self.request_json(
            "models", "GET", v1_url(self.config, "models"), self.config
        )
        try:
            return [m["id"] for m in answer["data"]]
        except (KeyError, TypeError):
            raise errors.bad_response("models", "answer has no data[].id") from None


def _first_content(answer: Answer) -> str | None:
    try:
        content = answer["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    return content if isinstance(content, str) else None


async def _assemble(lines: AsyncIterator[str]) -> Answer:
    """Join `data:` chunks' `choices[0].delta.content`; no `[DONE]` means truncated."""
    pieces: list[str] = []
    meta: dict[str, Any] = {}
    role = "assistant"
    finish_reason = None
    async for line in lines:
        if not line.startswith("data:"):
            continue
        data = line[5:].strip()
        if data == "[DONE]":
            answer = {
                "id": meta.get("id"),
                "object": "chat.completion",
                "created": meta.get("created", int(time.time())),
                "model": meta.get("model"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": role, "content": "".join(pieces)},
                        "finish_reason": finish_reason,
                    }
                ],
                "streamed": True,
            }
            if "usage" in meta:  # `stream_options: {"include_usage": true}`: the last chunk's
                answer["usage"] = meta["usage"]
            return answer
        try:
            chunk = json.loads(data)
            choice = chunk["choices"][0] if chunk.get("choices") else {}
            delta = choice.get("delta") or {}
        except (json.JSONDecodeError, AttributeError, TypeError, KeyError):
            raise errors.bad_response("chat", "stream chunk is not valid JSON") from None
        for key in ("id", "created", "model"):
            if key in chunk and key not in meta:
                meta[key] = chunk[key]
        if isinstance(chunk.get("usage"), dict):
            meta["usage"] = chunk["usage"]
        role = delta.get("role") or role
        if isinstance(delta.get("content"), str):
            pieces.append(delta["content"])
        finish_reason = choice.get("finish_reason") or finish_reason
    raise errors.bad_response("chat", "stream ended without [DONE] (truncated)")
