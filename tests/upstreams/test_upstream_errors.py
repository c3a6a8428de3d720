"""The one error model: statuses, Retry-After, transport failures, scrubbing."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.upstreams import errors


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(429, True), (500, True), (502, True), (503, True), (408, True),
     (400, False), (401, False), (403, False), (404, False), (409, False), (413, False)],
)  # fmt: skip
def test_status_sorting(status: int, retryable: bool) -> None:
    error = errors.from_status(status, "chat", "nope")
    assert isinstance(error, RetryableError if retryable else FinalError)
    assert error.status == status and error.retryable is retryable
    assert error.message == f"chat: HTTP {status} nope"


@pytest.mark.parametrize(
    ("value", "expected"), [("7", 7.0), ("0.5", 0.5), ("-3", 0.0), ("soon", None), (None, None)]
)
def test_retry_after_seconds(value: str | None, expected: float | None) -> None:
    assert errors.parse_retry_after(value) == expected


def test_retry_after_http_date() -> None:
    header = email.utils.formatdate(1_000_030, usegmt=True)
    assert errors.parse_retry_after(header, now=1_000_000) == pytest.approx(30.0)


def test_429_carries_retry_after() -> None:
    response = httpx.Response(429, headers={"Retry-After": "3"}, text="slow down")
    error = errors.from_response(response, "upload")
    assert isinstance(error, RetryableError) and error.retry_after == 3.0


def test_token_is_scrubbed_and_message_is_short() -> None:
    body = "invalid token sk-LEAK-123 " + "x" * 1000
    error = errors.from_status(401, "chat", body, secret="sk-LEAK-123")
    assert "sk-LEAK-123" not in str(error) and "***" in error.message
    assert len(error.message) < 230


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (httpx.ReadTimeout("t"), 598),
        (httpx.ConnectTimeout("t"), 598),
        (httpx.ConnectError("refused http://u:sk-LEAK@h"), 597),
        (httpx.RemoteProtocolError("peer closed"), 597),
        (httpx.ReadError("reset"), 597),
    ],
)
def test_transport_failures_are_retryable(exc: httpx.HTTPError, status: int) -> None:
    error = errors.from_transport(exc, "chat")
    assert isinstance(error, RetryableError) and error.status == status
    assert "sk-LEAK" not in str(error)
