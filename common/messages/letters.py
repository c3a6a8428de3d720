"""Messages nothing of ours acts on as work: a dead letter (topic `…dead`), and the
original `batchsvc -n` feed (topic `gpt4api`)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from gpt4batch.common.messages.base import SCHEMA_VERSION


class DeadLetter(BaseModel):
    """A message that can never be handled, with why (topic `…dead`)."""

    model_config = ConfigDict(extra="allow")

    v: int = SCHEMA_VERSION
    topic: str
    channel: str
    service: str
    id: str
    attempts: int
    reason: str
    at: float = Field(description="Unix time it was dead-lettered.")
    body: str | None = Field(
        description="The original body (its first bytes if `body_truncated`), when UTF-8 text."
    )
    body_b64: str | None = Field(default=None, description="The original body otherwise.")
    body_size: int | None = Field(default=None, description="Size of the whole original body.")
    body_sha256: str | None = Field(default=None, description="sha256 of the whole body (hex).")
    body_truncated: bool = Field(
        default=False, description="Only the body's first bytes are kept, so the letter fits."
    )
    unauthenticated: bool = Field(
        default=False,
        description="The message was refused for want of a valid authenticator (a forgery, "
        "or a publisher with another secret): its letter never turns a record into a failed "
        "line.",
    )


class FeedMessage(BaseModel):
    """The original `batchsvc -n` feed on topic `gpt4api`: one per answered ask.

    Published for systems built on the original; nothing of ours consumes it.
    """

    ask: str = Field(description="The ask's message text.")
    answer: dict[str, Any] = Field(description="The whole chat answer, as the upstream sent it.")
    dir: str = Field(description="The download folder of the produced files.")
