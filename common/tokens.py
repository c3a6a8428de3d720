"""Tokens a call takes: estimated before it (the token limit's reservation), read after it.

No tokenizer is bundled and none is downloaded at run time, so a call's tokens are
estimated by this documented rule (docs/limits.md), then corrected from the `usage`
the upstream reports (`reported_usage`); where it reports none (gpt4api.plus, a
stream without usage) the estimate stands.

Prompt (`estimate_prompt_tokens`):
- text: one token per 4 ASCII characters (OpenAI's rule of thumb for English),
  rounded up, plus one per other character (a CJK ideograph is about one token;
  accented Latin letters are fewer, so the rule errs high there);
- each chat message 3 more (its role and separators) and 1 more for a `name`,
  and every request 3 for the reply's priming (OpenAI's cookbook, "How to count
  tokens with tiktoken");
- an image: 85 at `detail: "low"`, else 85 + 170 per 512-px tile once the image
  is scaled to fit 2048 x 2048 and then its short side to 768 (OpenAI's vision
  pricing); the size comes from a data URL's PNG/JPEG header, and 1024 x 1024
  (765 tokens) is assumed where it cannot be read (a remote URL);
- a file part: its text, or a base64 payload's decoded bytes / 4;
- everything else the body sends the model (tools, a response format, the
  Responses API's `instructions`): its JSON text as text.

Completion (`estimate_completion_tokens`): the body's `max_completion_tokens`,
`max_tokens` or `max_output_tokens` (times `n` choices), else the configured default.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from gpt4batch.common.imagesize import image_size

#: Tokens around each chat message (role, separators) and a message's `name`.
PER_MESSAGE = 3
PER_NAME = 1
#: Tokens every reply is primed with (`<|start|>assistant<|message|>`).
PER_REPLY = 3
#: An image at `detail: "low"`, and the base of every other detail.
IMAGE_BASE = 85
#: Each 512-px tile of an image at high (or auto) detail.
IMAGE_TILE = 170
#: What is assumed of an image whose size cannot be read (a remote URL).
UNKNOWN_IMAGE_SIZE = (1024, 1024)

#: Body keys that are no input to the model (their text costs no tokens).
_NOT_PROMPT = frozenset(
    {"model", "messages", "input", "prompt", "stream", "stream_options", "n", "temperature",
     "top_p", "max_tokens", "max_completion_tokens", "max_output_tokens", "user", "seed",
     "store", "metadata", "logprobs", "top_logprobs", "presence_penalty", "frequency_penalty",
     "logit_bias", "stop", "parallel_tool_calls", "service_tier", "reasoning", "truncation",
     "previous_response_id", "background", "include", "modalities", "prompt_cache_key",
     "safety_identifier", "history_and_training_disabled", "conversation_id",
     "parent_message_id", "gizmo_id", "openai_parameter"}
)  # fmt: skip

_TEXT_PARTS = frozenset({"text", "input_text", "output_text", "refusal"})
_IMAGE_PARTS = frozenset({"image_url", "input_image"})
_FILE_PARTS = frozenset({"file", "input_file"})


def text_tokens(text: str) -> int:
    """Tokens of `text`: ASCII characters / 4 rounded up, plus one per other character."""
    if text.isascii():
        return -(-len(text) // 4)
    other = len(text) - len(text.encode("ascii", "ignore"))
    return -(-(len(text) - other) // 4) + other


def image_tokens(width: int, height: int, detail: str = "auto") -> int:
    """OpenAI's vision cost of a `width` x `height` image at `detail`."""
    if detail == "low" or width <= 0 or height <= 0:
        return IMAGE_BASE
    scale = min(1.0, 2048 / max(width, height))
    wide, high = width * scale, height * scale
    scale = min(1.0, 768 / min(wide, high))
    wide, high = wide * scale, high * scale
    return IMAGE_BASE + IMAGE_TILE * math.ceil(wide / 512) * math.ceil(high / 512)


def estimate_prompt_tokens(body_or_messages: Mapping[str, Any] | Iterable[Any]) -> int:
    """Estimated prompt tokens of a request body (chat `messages`, Responses `input`,
    completions `prompt`, plus its tools and the like) or of a bare message list."""
    if not isinstance(body_or_messages, Mapping):
        return _messages_tokens(body_or_messages) + PER_REPLY
    body = body_or_messages
    tokens = 0
    messages = body.get("messages")
    if messages is not None:
        tokens += _messages_tokens(messages) + PER_REPLY
    given = body.get("input")
    if isinstance(given, str):
        tokens += text_tokens(given) + PER_MESSAGE + PER_REPLY
    elif given is not None:
        tokens += _messages_tokens(given) + PER_REPLY
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        tokens += text_tokens(prompt)
    elif isinstance(prompt, list):
        tokens += sum(text_tokens(p) if isinstance(p, str) else _json_tokens(p) for p in prompt)
    for key, value in body.items():
        if key in _NOT_PROMPT or value is None:
            continue
        tokens += text_tokens(value) if isinstance(value, str) else _json_tokens(value)
    return tokens


def estimate_completion_tokens(body: Mapping[str, Any], default: int) -> int:
    """The most the answer may take (`max_completion_tokens`, `max_tokens`,
    `max_output_tokens`, times `n`), or `default` where the body sets no limit."""
    for key in ("max_completion_tokens", "max_tokens", "max_output_tokens"):
        limit = _count(body.get(key))
        if limit is not None and limit > 0:
            break
    else:
        limit = default
    choices = _count(body.get("n"))
    return limit * (choices if choices is not None and choices > 1 else 1)


def reported_usage(answer: Mapping[str, Any]) -> tuple[int, int] | None:
    """(prompt, completion) tokens from an answer's `usage` (chat and completions:
    `prompt_tokens`/`completion_tokens`; Responses: `input_tokens`/`output_tokens`;
    embeddings: `prompt_tokens` = `total_tokens`, no completion), or None where the upstream
    reported none."""
    usage = answer.get("usage") if isinstance(answer, Mapping) else None
    if not isinstance(usage, Mapping):
        return None
    for prompt_key, completion_key in (
        ("prompt_tokens", "completion_tokens"),
        ("input_tokens", "output_tokens"),
    ):
        prompt, completion = _count(usage.get(prompt_key)), _count(usage.get(completion_key))
        if prompt is not None and completion is not None:
            return prompt, completion
        if prompt is not None and _count(usage.get("total_tokens")) == prompt:  # embeddings
            return prompt, 0
    return None


def reported_details(answer: Mapping[str, Any]) -> tuple[int, int]:
    """(cached prompt tokens, reasoning tokens) of an answer's `usage` (chat and
    completions: `prompt_tokens_details` / `completion_tokens_details`; Responses:
    `input_tokens_details` / `output_tokens_details`); 0 where not reported."""
    usage = answer.get("usage") if isinstance(answer, Mapping) else None
    if not isinstance(usage, Mapping):
        return 0, 0
    return (
        _detail(usage, ("prompt_tokens_details", "input_tokens_details"), "cached_tokens"),
        _detail(usage, ("completion_tokens_details", "output_tokens_details"), "reasoning_tokens"),
    )


def _detail(usage: Mapping[str, Any], places: tuple[str, ...], key: str) -> int:
    for place in places:
        details = usage.get(place)
        if isinstance(details, Mapping):
            found = _count(details.get(key))
            if found is not None:
                return found
    return 0


def _count(value: Any) -> int | None:
    """`value` if it is a token count (a non-negative int, not a bool)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    return None


def _messages_tokens(messages: Iterable[Any]) -> int:
    tokens = 0
    for message in messages:
        if isinstance(message, str):
            tokens += text_tokens(message) + PER_MESSAGE
            continue
        if not isinstance(message, Mapping):
            tokens += _json_tokens(message)
            continue
        tokens += PER_MESSAGE
        for key, value in message.items():
            if key == "content":
                tokens += _content_tokens(value)
            elif key == "name" and isinstance(value, str):
                tokens += PER_NAME + text_tokens(value)
            elif key in ("role", "type"):
                continue
            elif isinstance(value, str):
                tokens += text_tokens(value)
            elif value is not None:
                tokens += _json_tokens(value)
    return tokens


def _content_tokens(content: Any) -> int:
    if isinstance(content, str):
        return text_tokens(content)
    if not isinstance(content, list):
        return 0 if content is None else _json_tokens(content)
    tokens = 0
    for part in content:
        if isinstance(part, str):
            tokens += text_tokens(part)
            continue
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind in _TEXT_PARTS and isinstance(part.get("text"), str):
            tokens += text_tokens(part["text"])
        elif kind in _IMAGE_PARTS:
            tokens += _image_part_tokens(part)
        elif kind in _FILE_PARTS:
            tokens += _file_part_tokens(part)
        else:
            tokens += _json_tokens(part)
    return tokens


def _image_part_tokens(part: Mapping[str, Any]) -> int:
    image = part.get("image_url")
    detail = part.get("detail") or "auto"
    if isinstance(image, Mapping):  # chat: {"image_url": {"url": ..., "detail": ...}}
        detail = image.get("detail") or detail
        image = image.get("url")
    size = UNKNOWN_IMAGE_SIZE
    if isinstance(image, str) and image.startswith("data:"):
        size = _data_url_size(image)
    return image_tokens(*size, detail=str(detail))


def _data_url_size(url: str) -> tuple[int, int]:
    """An inline image's size from the first bytes of its base64 data."""
    head = url[url.find(",") + 1 :][:87_384]  # 64 KiB decoded: past a JPEG's usual headers
    try:
        data = base64.b64decode(head[: len(head) // 4 * 4])
    except (binascii.Error, ValueError):
        return UNKNOWN_IMAGE_SIZE
    return image_size(data)


def _file_part_tokens(part: Mapping[str, Any]) -> int:
    nested = part.get("file")
    file: Mapping[str, Any] = nested if isinstance(nested, Mapping) else part
    data = file.get("file_data")
    if isinstance(data, str):  # base64, maybe as a data URL: about 3 bytes per 4 characters
        return -(-(len(data) - data.find(",") - 1) * 3 // 16)
    text = file.get("text")
    return text_tokens(text) if isinstance(text, str) else _json_tokens(file)


def _json_tokens(value: Any) -> int:
    return text_tokens(json.dumps(value, ensure_ascii=False, default=str))
