"""Answers are parsed by pydantic-core where it can, by `json.loads` where it refuses: the
result is what `json.loads` made of every answer before."""

from __future__ import annotations

import json

import pytest

from gpt4batch.common.errors import RetryableError
from gpt4batch.common.upstreams.base import parse_json
from gpt4batch.common.upstreams.errors import BAD_RESPONSE

SAME = [
    b'{"message_id":"m1","contents":[{"x":[1,2.5,null,true]}],"created":1700000000}',
    b"[1, 2.5, 0.30000000000000004, 1.7976931348623157e308, 5e-324, -0.0]",
    b'{"a": NaN, "b": Infinity, "c": -Infinity, "d": 1e400}',
    b'{"lone": "\\ud800", "pair": "\\ud83d\\ude00", "esc": "\\u00e9\\n"}',
    '{"é": "ü ✓"}'.encode(),
    b'{"a": 1, "a": 2}',
    b"123456789012345678901234567890",
    '{"utf16": true}'.encode("utf-16"),
]


@pytest.mark.parametrize("body", SAME)
def test_an_answer_parses_as_json_loads_parses_it(body: bytes) -> None:
    assert repr(parse_json(body, "chat")) == repr(json.loads(body))


@pytest.mark.parametrize("body", [b"", b"{", b"\xff\xfe\x00", b"nul", b'{"a": 1} x'])
def test_an_answer_that_is_not_json_is_a_bad_response(body: bytes) -> None:
    with pytest.raises(RetryableError) as info:
        parse_json(body, "chat")
    assert info.value.status == BAD_RESPONSE and "chat: answer is not valid JSON" in str(info.value)
