"""chatgpt-service (seed 003): `messages` (or legacy `query`) in, `{code, msg, data}` out.

The service has no fixed path: `chat_url` if set, else `base_url` itself is the
endpoint that is POSTed to.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from typing import Any

from gpt4batch.common.errors import FinalError
from gpt4batch.common.messages import Ask, AskOverrides
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.base import Answer, ConversationState, HttpBase
from gpt4batch.common.upstreams.config import UpstreamConfig

DEFAULT_MODEL = "gpt-3.5-turbo"


class ChatgptServiceClient(HttpBase):
    """Client of a chatgpt-service deployment; text only."""

    kind = "chatgpt-service"

    def chat_url(self, config: UpstreamConfig) -> str:
        return config.chat_url or config.base()

    async def chat_messages(
        self, messages: list[dict[str, Any]], *, config: UpstreamConfig | None = None
    ) -> Answer:
        """One call; the answer is the service JSON plus a local `message_id`.

        A non-zero `code` is a FinalError with status 594 and the service's `msg`.
        """
        config = config or self.config
        sampling = config.sampling.as_body()
        body: dict[str, Any] = {
            "messages": messages,
            "model": config.model or DEFAULT_MODEL,
            "openai_parameter": not sampling,
            **sampling,
        }
        answer = await self.request_json("chat", "POST", self.chat_url(config), config, json=body)
        if not isinstance(answer, dict) or "code" not in answer:
            raise errors.bad_response("chat", "answer has no code")
        if answer["code"] != 0:
            msg = errors.scrub(str(answer.get("msg", "")), config.secret())
            raise FinalError(errors.CODE_NOT_ZERO, f"chat: code {answer['code']}: {msg}")
        data = answer.get("data")
        if not isinstance(data, dict) or not isinstance(data.get("response"), str):
            raise errors.bad_response("chat", "answer has no data.response")
        answer.setdefault("message_id", f"local-{uuid.uuid4()}")
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
        """Send the history plus this ask; images and files are refused (FinalError 415)."""
        if ask.image_paths() or ask.files:
            raise FinalError(
                errors.UNSUPPORTED_FILE, f"ask {ask.id}: chatgpt-service takes no images or files"
            )
        config = self.config.with_overrides(overrides)
        user = {"role": "user", "content": ask.content}
        answer = await self.chat_messages([*state.messages, user], config=config)
        reply = {"role": "assistant", "content": answer["data"]["response"]}
        return answer, replace(
            state, parent_message_id=answer["message_id"], messages=(*state.messages, user, reply)
        )
