"""Turning httpx outcomes into the one upstream error model.

Every client raises only `RetryableError` or `FinalError` (from
`gpt4batch.common.errors`). `status` is the upstream HTTP status when one was
received, otherwise one of our own codes below. Messages are short, name the
endpoint, and have the access token scrubbed out.

Our own codes for failures without a usable HTTP status are the `IErrCode`
table in `gpt4batch.common.errors` (docs/errors.md); the names below are
the ones the clients use.
"""

from __future__ import annotations

import socket

import httpx

from gpt4batch.common.errors import FinalError, IErrCode, RetryableError, UpstreamError
from gpt4batch.common.retry import RETRYABLE_STATUSES, is_retryable_status, parse_retry_after

__all__ = ["RETRYABLE_STATUSES", "parse_retry_after"]  # the one retry model, re-exported

TIMEOUT = IErrCode.TIMEOUT
CONNECTION = IErrCode.CONNECTION
BAD_RESPONSE = IErrCode.BAD_RESPONSE
CODE_NOT_ZERO = IErrCode.CODE_NOT_ZERO
LOCAL_FILE = IErrCode.LOCAL_FILE
UNSUPPORTED_FILE = IErrCode.UNSUPPORTED_FILE
TOO_LARGE = IErrCode.FILE_TOO_LARGE
UNTRUSTED_HOST = IErrCode.UNTRUSTED_HOST

_MAX_MESSAGE = 200


def scrub(text: str, secret: str | None) -> str:
    """`text` without `secret` and cut to a short length."""
    if secret:
        text = text.replace(secret, "***")
    text = " ".join(text.split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def from_status(
    status: int,
    endpoint: str,
    body: str = "",
    *,
    retry_after: str | None = None,
    secret: str | None = None,
) -> UpstreamError:
    """The error for a non-2xx answer: 429/408/5xx retryable, every other status final."""
    detail = scrub(body, secret)
    message = f"{endpoint}: HTTP {status}" + (f" {detail}" if detail else "")
    if is_retryable_status(status):
        return RetryableError(status, message, retry_after=parse_retry_after(retry_after))
    return FinalError(status, message)


def from_transport(exc: BaseException, endpoint: str) -> RetryableError:
    """The error for a failure below HTTP (timeouts and broken connections are retryable),
    named for what it was: timed out, connection refused, host not resolved, closed…

    The httpx message is not copied: it may carry the URL, and URLs can carry secrets.
    The cause is looked at, not the exception's class: httpx-aiohttp turns every aiohttp
    connection error into `httpx.ConnectTimeout` (a refused connection read "timed out").
    """
    chain = [exc]
    while chain[-1].__cause__ is not None and len(chain) < 8:
        chain.append(chain[-1].__cause__)
    root = chain[-1]
    kind = type(root).__name__
    mislabelled = isinstance(root, (ConnectionError, socket.gaierror)) or any(
        type(e).__module__.startswith("aiohttp") for e in chain
    )
    if any(isinstance(e, TimeoutError) for e in chain) or (
        isinstance(exc, httpx.TimeoutException) and not mislabelled
    ):
        return RetryableError(TIMEOUT, f"{endpoint}: timed out ({kind})")
    return RetryableError(CONNECTION, f"{endpoint}: {_connection_failure(root)} ({kind})")


def _connection_failure(exc: BaseException) -> str:
    """What went wrong with a connection, in a few words."""
    os_error = getattr(exc, "os_error", None) or exc  # aiohttp keeps the OSError there
    if isinstance(os_error, ConnectionRefusedError):
        return "connection refused"
    if isinstance(os_error, socket.gaierror) or "DNS" in type(exc).__name__:
        return "cannot resolve the host"
    if isinstance(os_error, ConnectionResetError) or "Disconnected" in type(exc).__name__:
        return "connection closed by the upstream"
    return "connection failed"


def bad_response(endpoint: str, what: str) -> RetryableError:
    """An answer we could not understand (bad JSON, missing fields, truncated stream)."""
    return RetryableError(BAD_RESPONSE, f"{endpoint}: {what}")


def answer_too_large(endpoint: str, limit: int) -> FinalError:
    """An answer past the size limit (after decompression): not read further, not retried
    (the same ask would be paid for again and answer the same)."""
    return FinalError(
        BAD_RESPONSE, f"{endpoint}: answer over {limit} bytes (--max-answer-bytes); not read"
    )
