"""The token estimator (common/tokens.py): the documented rule, case by case."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from gpt4batch.common.tokens import (
    IMAGE_BASE,
    IMAGE_TILE,
    PER_MESSAGE,
    PER_NAME,
    PER_REPLY,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    image_tokens,
    reported_usage,
    text_tokens,
)

JPEG = Path(__file__).parents[1] / "data" / "1.jpeg"


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("", 0),
        ("abcd", 1),
        ("abcde", 2),
        ("x" * 400, 100),
        ("日本語", 3),  # one per non-ASCII character
        ("ab日本", 1 + 2),
        ("café", 1 + 1),
    ],
)
def test_text_tokens(text: str, tokens: int) -> None:
    assert text_tokens(text) == tokens


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [
        ((1024, 1024), "auto", IMAGE_BASE + 4 * IMAGE_TILE),  # 768x768: 2x2 tiles (765)
        ((2048, 4096), "high", IMAGE_BASE + 6 * IMAGE_TILE),  # 1024x2048 -> 768x1536: 2x3
        ((512, 512), "high", IMAGE_BASE + IMAGE_TILE),
        ((4000, 4000), "low", IMAGE_BASE),
        ((0, 0), "high", IMAGE_BASE),
    ],
)
def test_image_tokens_follow_openai_vision_pricing(
    size: tuple[int, int], detail: str, tokens: int
) -> None:
    assert image_tokens(*size, detail=detail) == tokens


def test_chat_messages_cost_their_text_plus_fixed_costs() -> None:
    messages = [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": "y" * 8, "name": "bob"},
    ]
    expected = (PER_MESSAGE + 10) + (PER_MESSAGE + 2 + PER_NAME + 1) + PER_REPLY
    assert estimate_prompt_tokens(messages) == expected
    body = {"model": "gpt-4o", "messages": messages, "max_tokens": 50, "temperature": 0.2}
    assert estimate_prompt_tokens(body) == expected  # sampling settings cost nothing


def test_content_parts_text_image_and_file() -> None:
    data = base64.b64encode(JPEG.read_bytes()).decode()  # 1200x800
    body = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "z" * 12},
                    {"type": "image_url", "image_url": {"url": f"data:image/jpeg;base64,{data}"}},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}},
                    {"type": "file", "file": {"file_data": "A" * 400}},
                ],
            }
        ]
    }
    jpeg = image_tokens(1200, 800)  # scaled to 1152x768: 3x2 tiles
    assert jpeg == IMAGE_BASE + 6 * IMAGE_TILE
    expected = PER_MESSAGE + 3 + jpeg + IMAGE_BASE + 75 + PER_REPLY
    assert estimate_prompt_tokens(body) == expected


def test_remote_image_assumes_1024_square() -> None:
    part = {"type": "input_image", "image_url": "https://example.com/a.png"}
    body = {"input": [{"role": "user", "content": [part]}]}
    assert estimate_prompt_tokens(body) == PER_MESSAGE + image_tokens(1024, 1024) + PER_REPLY


def test_responses_input_instructions_and_tools_count() -> None:
    tools = [{"type": "function", "name": "f"}]
    body = {"model": "m", "input": "q" * 20, "instructions": "i" * 8, "tools": tools}
    tool_text = '[{"type": "function", "name": "f"}]'
    expected = 5 + PER_MESSAGE + PER_REPLY + 2 + text_tokens(tool_text)
    assert estimate_prompt_tokens(body) == expected


def test_legacy_prompt() -> None:
    assert estimate_prompt_tokens({"prompt": "p" * 16}) == 4
    assert estimate_prompt_tokens({"prompt": ["p" * 4, "p" * 8]}) == 3


@pytest.mark.parametrize(
    ("body", "tokens"),
    [
        ({"max_tokens": 300}, 300),
        ({"max_completion_tokens": 200, "max_tokens": 300}, 200),
        ({"max_output_tokens": 100}, 100),
        ({"max_tokens": 50, "n": 3}, 150),
        ({}, 777),
        ({"max_tokens": None}, 777),
        ({"max_tokens": True}, 777),  # not a count
        ({"max_tokens": 0}, 777),
    ],
)
def test_completion_estimate(body: dict, tokens: int) -> None:
    assert estimate_completion_tokens(body, 777) == tokens


@pytest.mark.parametrize(
    ("answer", "usage"),
    [
        ({"usage": {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42}}, (12, 30)),
        ({"usage": {"input_tokens": 7, "output_tokens": 9, "total_tokens": 16}}, (7, 9)),
        ({"usage": {"prompt_tokens": 12}}, None),
        ({"usage": {"prompt_tokens": -1, "completion_tokens": 3}}, None),
        ({"usage": {"prompt_tokens": "12", "completion_tokens": 3}}, None),
        ({"usage": None}, None),
        ({"message": {"id": "m"}}, None),  # gpt4api.plus reports none
    ],
)
def test_reported_usage(answer: dict, usage: tuple[int, int] | None) -> None:
    assert reported_usage(answer) == usage
