"""The dead letter of a message that cannot be handled: always small enough to publish."""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from gpt4batch.common.authenticator import OVERHEAD as AUTHENTICATOR_OVERHEAD
from gpt4batch.common.bus import Subscription, TransportMessage, encode
from gpt4batch.common.logging import redact_text
from gpt4batch.common.messages import DeadLetter

#: Bytes of a poison body a dead letter keeps (the rest is summed up by size and sha256).
DEAD_BODY_KEEP = 16 * 1024


def letter_for(
    service: str,
    max_msg_size: int | None,
    sub: Subscription[Any],
    msg: TransportMessage,
    reason: str,
    *,
    unauthenticated: bool = False,
) -> bytes:
    """The dead letter of `msg`, always small enough to publish.

    A poison body can be as large as the biggest message nsqd takes, so the
    letter keeps at most `DEAD_BODY_KEEP` bytes of it (less if the bus's limit
    is smaller) plus the whole body's size and sha256; were the letter too big
    to publish, the message would be requeued forever instead.
    """
    body = msg.body
    limit = (max_msg_size or DEAD_BODY_KEEP * 16) - AUTHENTICATOR_OVERHEAD
    keep = min(DEAD_BODY_KEEP, limit // 16)
    reason = redact_text(reason)[:2000]
    while True:
        letter = encode(_letter(service, sub, msg, body[:keep], reason, len(body), unauthenticated))
        if len(letter) <= limit or (keep == 0 and len(reason) <= 100):
            return letter
        keep //= 2
        if keep == 0:
            reason = reason[:100]


def _letter(
    service: str,
    sub: Subscription[Any],
    msg: TransportMessage,
    kept: bytes,
    reason: str,
    size: int,
    unauthenticated: bool,
) -> DeadLetter:
    text = _utf8(kept, cut=len(kept) < size)
    body = msg.body
    return DeadLetter(
        topic=sub.topic,
        channel=sub.channel,
        service=service,
        id=msg.id,
        attempts=msg.attempts,
        reason=reason,
        at=time.time(),
        body=text,
        body_b64=None if text is not None else base64.b64encode(kept).decode(),
        body_size=size,
        body_sha256=hashlib.sha256(body).hexdigest(),
        body_truncated=len(kept) < size,
        unauthenticated=unauthenticated,
    )


def _utf8(data: bytes, *, cut: bool) -> str | None:
    """`data` as text if it is UTF-8 (a cut body may end inside a character)."""
    for end in range(len(data), max(-1, len(data) - (4 if cut else 1)), -1):
        try:
            return data[:end].decode()
        except UnicodeDecodeError:
            continue
    return None
