"""The original's NSQ feed: every answered ask as `{"ask", "answer", "dir"}` on `gpt4api`.

`batchsvc -n` published one such message after each successful chat call;
systems built on it consume that topic. A failed publish is logged, never
fails the record (as in the original): the result is what is paid for.
"""

from __future__ import annotations

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import FeedMessage, Record

log = get_logger("gpt4batch.caller")


def feed_messages(record: Record, folder: str) -> list[FeedMessage]:
    """One message per answered ask, in order (the answers line up with the asks)."""
    answers = record.answers or []
    return [
        FeedMessage(ask=ask.content, answer=answer.model_dump(mode="json"), dir=folder)
        for ask, answer in zip(record.asks, answers, strict=False)
    ]


async def publish_feed(bus: Bus, topic: str, record: Record, folder: str) -> None:
    messages = feed_messages(record, folder)
    if not messages:
        return
    try:
        await bus.publish_many(topic, messages)
    except Exception as exc:  # the original only logged it too; the result is what counts
        log.warning("feed publish failed", topic=topic, record=record.id, error=str(exc))
