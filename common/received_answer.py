"""An upstream's answer kept as the JSON text it sent: a Batch API line's `response.body`.

A request sent whole (`AskMessage.request`) has its answer parsed once by the
caller (usage, the shape check) and carried in the result as the text received,
`{"gpt4batch_received_json": "<the upstream's JSON>"}`, so the gateway writes
those bytes into the output line instead of writing the JSON again (numbers,
escapes and key order as the upstream spelt them). Only line breaks are
dropped: an output line is one line, and in valid JSON a line break is never
inside a string, only whitespace between tokens.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

RECEIVED = "gpt4batch_received_json"


def kept(answer: dict[str, Any], received: bytes | None) -> dict[str, Any]:
    """What a result carries for `answer`: the text received, or the parsed answer itself
    where no bytes were kept (an assembled stream) or they are not UTF-8."""
    if received is None:
        return answer
    try:
        text = received.decode("utf-8")
    except UnicodeDecodeError:
        return answer
    return {RECEIVED: text.replace("\r", "").replace("\n", "").strip()}


def received_json(answer: Any) -> str | None:
    """The JSON text an answer was received as (None: an answer kept parsed)."""
    if isinstance(answer, Mapping) and len(answer) == 1:
        text = answer.get(RECEIVED)
        if isinstance(text, str):
            return text
    return None
