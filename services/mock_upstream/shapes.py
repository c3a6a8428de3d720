"""Answer bodies shaped exactly like the seed examples (001 gpt4api, 002 OpenAI, 003)."""

from __future__ import annotations

import hashlib
import math
import struct
import time
from base64 import b64encode
from typing import Any
from urllib.parse import quote

#: Message texts that make an all-tools/gizmos answer carry `downloads`.
DRAW_TRIGGERS = ("draw", "画")
#: Message text that makes the advertised download names hostile.
HOSTILE_TRIGGER = "hostile-name"
HOSTILE_NAMES = (
    "../../etc/passwd",
    "..\\..\\windows\\win.ini",
    "/abs/dir/x.png",
    "a/b\x00c\x1b[31m\n.png",
)


def answer_text(message: str, n_parts: int, n_attachments: int) -> str:
    head = message[:200]
    return f"Mock answer to: {head} (parts={n_parts}, attachments={n_attachments})"


def gpt_message(
    *,
    message_id: str,
    role: str,
    text: str,
    conversation_id: str,
    metadata: dict[str, Any],
    created: float | None,
    end_turn: bool | None,
) -> dict[str, Any]:
    """One entry of `contents`: the ChatGPT-web message object of seed 001."""
    return {
        "conversation_id": conversation_id,
        "error": None,
        "message": {
            "author": {"metadata": {}, "name": None, "role": role},
            "content": {"content_type": "text", "parts": [text]},
            "create_time": created,
            "end_turn": end_turn,
            "id": message_id,
            "metadata": metadata,
            "recipient": "all",
            "status": "finished_successfully",
            "update_time": None,
            "weight": 1,
        },
    }


def chat_answer(
    *,
    body: dict[str, Any],
    conversation_id: str,
    message_id: str,
    user_message_id: str,
    parent_id: str,
    request_id: str,
    downloads: list[str],
) -> dict[str, Any]:
    """The all-tools/gizmos answer: created, message_id, conversation_id, end_turn,
    contents[...], downloads[...]."""
    now = time.time()
    message = str(body.get("message", ""))
    parts = body.get("parts") or []
    attachments = body.get("attachments") or []
    contents = []
    if attachments or parts:
        contents.append(
            gpt_message(
                message_id=user_message_id,
                role="user",
                text=message,
                conversation_id=conversation_id,
                metadata={
                    "attachments": attachments,
                    "message_type": None,
                    "request_id": request_id,
                    "timestamp_": "absolute",
                },
                created=now,
                end_turn=None,
            )
        )
    contents.append(
        gpt_message(
            message_id=message_id,
            role="assistant",
            text=answer_text(message, len(parts), len(attachments)),
            conversation_id=conversation_id,
            metadata={
                "citations": [],
                "finish_details": {"stop_tokens": [100260], "type": "stop"},
                "gizmo_id": body.get("gizmo_id"),
                "is_complete": True,
                "message_type": "next",
                "model_slug": body.get("model") or "gpt-4",
                "parent_id": parent_id,
                "request_id": request_id,
                "timestamp_": "absolute",
            },
            created=now,
            end_turn=True,
        )
    )
    return {
        "created": int(now),
        "message_id": message_id,
        "conversation_id": conversation_id,
        "end_turn": False,
        "contents": contents,
        "downloads": downloads,
    }


def download_url(base: str, file_id: str, name: str, sig: str) -> str:
    """A signed-blob-like URL with the file name escaped inside `rscd`."""
    rscd = quote(f"attachment; filename={name}", safe="")
    return f"{base}/files/{file_id}?se=2099-01-01T00%3A00%3A00Z&sp=r&rscd={rscd}&sig={sig}"


def file_bytes(file_id: str, size: int = 4096) -> bytes:
    """Deterministic content of a download: the id's bytes repeated."""
    seed = (file_id.encode() or b"x") + b"\n"
    return (seed * (size // len(seed) + 1))[:size]


def completion(
    completion_id: str,
    model: str,
    text: str,
    prompt_tokens: int,
    tokens: int,
    *,
    chat: bool = True,
    n: int = 1,
    cached: int = 0,
    reasoning: int = 0,
) -> dict[str, Any]:
    """A `chat.completion` (or `text_completion`) like seed 002's example, with `n` choices
    of `text` (`tokens` each) and the API's usage details."""
    choices = []
    for index in range(n):
        choice: dict[str, Any] = {"index": index, "finish_reason": "stop"}
        if chat:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
            choice["logprobs"] = None
        else:
            choice["text"] = text
            choice["logprobs"] = None
        choices.append(choice)
    completion_tokens = tokens * n
    return {
        "id": completion_id,
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": model,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
            "prompt_tokens_details": {"cached_tokens": cached, "audio_tokens": 0},
            "completion_tokens_details": {
                "reasoning_tokens": reasoning,
                "audio_tokens": 0,
                "accepted_prediction_tokens": 0,
                "rejected_prediction_tokens": 0,
            },
        },
        "choices": choices,
    }


def embedding_vector(text: str, size: int) -> list[float]:
    """A unit-length vector that depends only on `text` (the same text, the same vector)."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(digest[i % len(digest)] - 127.5) / 127.5 for i in range(size)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 8) for x in raw]


def embeddings(
    inputs: list[str], model: str, size: int, prompt_tokens: int, *, base64: bool = False
) -> dict[str, Any]:
    """A `CreateEmbeddingResponse`: one embedding per input, floats or base64 float32."""
    data = []
    for index, text in enumerate(inputs):
        vector = embedding_vector(text, size)
        value: Any = vector
        if base64:
            value = b64encode(struct.pack(f"<{size}f", *vector)).decode()
        data.append({"object": "embedding", "index": index, "embedding": value})
    usage = {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}


def response(
    response_id: str,
    message_id: str,
    body: dict[str, Any],
    text: str,
    input_tokens: int,
    output_tokens: int,
    *,
    cached: int = 0,
    reasoning: int = 0,
) -> dict[str, Any]:
    """A completed Responses API `response` to `body`, its output one assistant message
    (after a reasoning item when there were reasoning tokens)."""
    output: list[dict[str, Any]] = []
    if reasoning:
        output.append({"id": "rs_" + message_id[4:], "type": "reasoning", "summary": []})
    output.append(
        {
            "id": message_id,
            "type": "message",
            "status": "completed",
            "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}],
        }
    )
    text_field = body.get("text")
    text_format: dict[str, Any] = text_field if isinstance(text_field, dict) else {}
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed",
        "background": False,
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "model": str(body.get("model") or "gpt-4.1-mini"),
        "output": output,
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "reasoning": {"effort": (body.get("reasoning") or {}).get("effort"), "summary": None},
        "store": body.get("store", True),
        "temperature": body.get("temperature", 1.0),
        "text": {"format": {"type": "text"}, **text_format},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p", 1.0),
        "truncation": body.get("truncation", "disabled"),
        "usage": {
            "input_tokens": input_tokens,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": reasoning},
            "total_tokens": input_tokens + output_tokens,
        },
        "user": body.get("user"),
        "metadata": body.get("metadata") or {},
    }


def chunk(
    completion_id: str, model: str, delta: dict[str, Any], finish: str | None
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


MODELS = ("gpt-3.5-turbo", "gpt-4", "gpt-4-gizmo", "text-davinci-003")


def models() -> dict[str, Any]:
    return {
        "object": "list",
        "data": [
            {"id": m, "object": "model", "created": 1686935002, "owned_by": "mock-upstream"}
            for m in MODELS
        ],
    }
