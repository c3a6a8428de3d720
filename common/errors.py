"""gpt4batch's exception tree; library errors are translated where they enter.

Gpt4BatchError
├── ConfigError          an option is wrong (names the option)
├── BusError
│   ├── BusConnectError  nsqd/nsqlookupd cannot be reached
│   └── PublishError     nsqd did not acknowledge a publish
├── HandlerOutcome       raised by handlers to steer acknowledgement
│   ├── Requeue          try again later (optionally after a delay)
│   └── Poison           never retry: dead-letter with a reason
└── UpstreamError        an upstream call failed
    ├── RetryableError   429, 5xx, timeouts, resets, broken JSON
    └── FinalError       400/401/403/404/413, `code != 0`, refused input
"""

from __future__ import annotations

from enum import IntEnum


class IErrCode(IntEnum):
    """Every `iErr.code` gpt4batch writes; each means one thing (docs/errors.md).

    A record failed by the upstream carries the upstream's HTTP status as is
    (400, 401, 403, 404, 429, 5xx…). Our own codes are 402, 422, 499 and 584–599;
    an upstream answering one of those is not something the upstreams we
    speak to do.
    """

    BUDGET_REACHED = 402  #: --budget-usd was reached before the record was run (resume it)
    REJECTED = 422  #: ingest refused the input line (message: file, line, field, reason)
    NOT_RUN = 499  #: the run stopped before the record was run (resume to run it)
    UNSUPPORTED_ENDPOINT = 584  #: a Batch API endpoint this upstream kind does not serve
    BATCH_CANCELLED = 585  #: the batch was cancelled before this record was run (never called)
    BATCH_EXPIRED = 586  #: the batch expired before this record was run (never called)
    RESULT_TOO_LARGE = 587  #: the answers would not fit even in 64 message-sized pieces
    DEADLINE = 588  #: the conversation ran past its deadline (--conversation-deadline)
    DEAD_LETTERED = 589  #: the record's message could never be handled (see `…dead`)
    LOCAL_FILE = 590  #: an ask's file cannot be read, or is not a regular file
    FORBIDDEN_PATH = 591  #: an ask's file is outside the allowed folders (or a secret)
    UNSUPPORTED_FILE = 592  #: a file this upstream kind cannot take
    FILE_TOO_LARGE = 593  #: a file over the upload limit; never sent
    CODE_NOT_ZERO = 594  #: a 200 answer whose `code` field is not 0 (chatgpt-service)
    UNTRUSTED_HOST = 595  #: the call would send the token to a host nobody configured
    BAD_RESPONSE = 596  #: invalid JSON, wrong shape, truncated SSE stream (retried first)
    CONNECTION = 597  #: connect refused, connection reset or dropped (retried first)
    TIMEOUT = 598  #: no answer within the connect/read/write timeout (retried first)
    INTERNAL = 599  #: a bug of ours; the message says what failed


class Gpt4BatchError(Exception):
    """Root of every error gpt4batch raises on purpose."""


class ConfigError(Gpt4BatchError):
    """A setting is missing or wrong; the message names the flag."""


class BusError(Gpt4BatchError):
    """Talking to NSQ failed."""


class BusConnectError(BusError):
    """No connection to nsqd could be made in time."""


class PublishError(BusError):
    """nsqd refused or never acknowledged a publish."""


class MessageTooLarge(PublishError):
    """A body over the bus's maximum message size; never sent."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        self.size = size
        self.limit = limit


class HandlerOutcome(Gpt4BatchError):
    """Base of the exceptions a handler raises to choose what happens to its message."""


class Requeue(HandlerOutcome):
    """Put the message back for another attempt, after `delay` seconds if given.

    `bounded`: each requeue counts toward the subscription's max attempts (its
    `Retries`; then `…dead` or its `give_up`), for a message that may never become
    handleable (an orphan result piece, a result of a batch over the sink's limits,
    a download that keeps failing). Unbounded requeues are for waits that end (a rate
    limit, a drain). Without `delay` the wait is the subscription's backoff, at least
    `retry_after` (a server's Retry-After) when given.
    """

    def __init__(
        self,
        reason: str = "requeue",
        delay: float | None = None,
        *,
        bounded: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.delay = delay
        self.bounded = bounded
        self.retry_after = retry_after


class Poison(HandlerOutcome):
    """The message can never succeed: send it to the dead-letter topic with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class UpstreamError(Gpt4BatchError):
    """An upstream call failed.

    `status` is the upstream HTTP status when there was one, otherwise one of
    our codes (see `gpt4batch.common.upstreams.errors`). The message is short
    and never contains a token.
    """

    retryable: bool = False

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.message = message
        self.retry_after = retry_after


class RetryableError(UpstreamError):
    """Transient: worth retrying with backoff (honouring `retry_after`)."""

    retryable = True


class FinalError(UpstreamError):
    """Retrying will not help."""

    retryable = False
