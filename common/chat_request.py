"""A Batch API chat request as a gpt4batch conversation, for the upstreams that take asks.

gpt4api.plus and chatgpt-service take one question per call, chained by
conversation ids, not a message list: a chat body becomes one ask (the last
user message, as text), the earlier messages its history (sent as a transcript
by those kinds), and `model` plus the sampling fields its overrides. The
gateway checks lines this way when such a caller serves the fleet; a caller of
such a kind converts the request it receives the same way. OpenAI-style
upstreams get the body whole instead (no conversion).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from gpt4batch.common.answer_text import content_text
from gpt4batch.common.messages import Ask, AskOverrides

#: Ask id of the one ask a Batch API line becomes (names download files, if any).
ASK_ID = "request"
#: Body fields passed on to a converting upstream (the rest of the body is not).
SAMPLING = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


class BadRequestLine(Exception):
    """A request line that cannot run: an error code of the API, a message, the field."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


@dataclass(frozen=True)
class ChatAsk:
    """A chat body as one ask after its history, with its model and sampling overrides."""

    ask: Ask
    history: list[dict[str, Any]]
    overrides: AskOverrides


def model_of(body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise BadRequestLine(
            "missing_required_parameter", "Missing required parameter: 'model'.", "body.model"
        )
    return model


def chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The body's `messages`: a non-empty list of objects with a `role`."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise BadRequestLine(
            "missing_required_parameter",
            "Missing required parameter: 'messages' (a non-empty array).",
            "body.messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise BadRequestLine(
                "invalid_message", "Each message needs a 'role'.", f"body.messages[{i}]"
            )
    return messages


def chat_ask(body: dict[str, Any]) -> ChatAsk:
    """`body` (a chat completion request) as one ask, or BadRequestLine saying why not."""
    model = model_of(body)
    messages = chat_messages(body)
    last = messages[-1]
    where = f"body.messages[{len(messages) - 1}]"
    if last["role"] != "user":
        raise BadRequestLine(
            "invalid_message", "The last message must have the role 'user'.", where
        )
    text = content_text(last.get("content"))
    if text is None:
        raise BadRequestLine(
            "unsupported_content",
            "The last message's content must be a string or text parts.",
            where + ".content",
        )
    return ChatAsk(Ask(id=ASK_ID, content=text), list(messages[:-1]), _overrides(body, model))


def _overrides(body: dict[str, Any], model: str) -> AskOverrides:
    values: dict[str, Any] = {"model": model}
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        values["max_tokens"] = body["max_completion_tokens"]
    values.update({k: body[k] for k in SAMPLING if body.get(k) is not None})
    try:
        return AskOverrides(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "body"
        raise BadRequestLine(
            "invalid_value", f"Invalid '{name}': {err['msg']}.", f"body.{name}"
        ) from None
