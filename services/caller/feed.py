"""The original's NSQ feed: every answered ask as `{"ask", "answer", "dir"}` on `gpt4api`.

`batchsvc -n` published one such message after each successful chat call;
systems built on it consume that topic. A failed publish is logged, never
fails the record (as in the original): the result is what is paid for.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pydantic_core

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import Ask
from gpt4batch.common.received_answer import received_json

log = get_logger("gpt4batch.caller")


def feed_bodies(asks: Sequence[Ask], answers: Sequence[dict[str, Any]], folder: str) -> list[bytes]:
    """One `FeedMessage` body per answered ask, in order (the answers line up with the asks),
    each answer as the upstream sent it."""
    return [
        pydantic_core.to_json({"ask": ask.content, "answer": _as_sent(answer), "dir": folder})
        for ask, answer in zip(asks, answers, strict=False)
    ]


def _as_sent(answer: dict[str, Any]) -> Any:
    """An answer kept as the text received (a request sent whole) as the object it is."""
    text = received_json(answer)
    return answer if text is None else pydantic_core.from_json(text)


async def publish_feed(
    bus: Bus,
    topic: str,
    asks: Sequence[Ask],
    answers: Sequence[dict[str, Any]],
    folder: str,
    record_id: str,
) -> None:
    bodies = feed_bodies(asks, answers, folder)
    if not bodies:
        return
    try:
        await bus.publish_many(topic, bodies)
    except Exception as exc:  # the original only logged it too; the result is what counts
        log.warning("feed publish failed", topic=topic, record=record_id, error=str(exc))
