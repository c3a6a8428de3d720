"""The one error model: statuses, Retry-After, transport failures, scrubbing."""

from __future__ import annotations

import asyncio
import email.utils
import socket
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from gpt4batch.common.errors import FinalError, RetryableError
from gpt4batch.common.upstreams import ConversationState, errors, make_client
from gpt4batch.common.upstreams.config import UpstreamConfig
from gpt4batch.common.upstreams.transport import UpstreamHttp
from tests.support.nsq_servers import free_port as _free_port


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
    error = errors.from_status(429, "upload", "slow down", retry_after="3")
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


@pytest.mark.parametrize("endpoint", ["upload", "chat"])
def test_a_refused_connection_is_reported_as_refused(endpoint: str, tmp_path: Path) -> None:
    """Issue 23: through the services' client (httpx over aiohttp for uploads, plain aiohttp
    for chats) a refused connection read "598 timed out (ConnectTimeout)"."""
    picture = tmp_path / "p.png"
    picture.write_bytes(b"x" * 100)
    config = UpstreamConfig(
        kind="gpt4api", base_url=f"http://127.0.0.1:{_free_port()}", access_token=SecretStr("t")
    )

    async def call() -> None:
        async with UpstreamHttp(2) as http:
            client = make_client(config, http)
            if endpoint == "upload":
                await client.upload(str(picture), "multimodal", None)  # type: ignore[attr-defined]
            else:
                await client.chat("hi", ConversationState())  # type: ignore[attr-defined]

    with pytest.raises(RetryableError) as info:
        asyncio.run(call())
    assert info.value.status == 597
    assert str(info.value).startswith(f"597: {endpoint}: connection refused")


def test_causes_name_what_happened() -> None:
    refused = httpx.ConnectTimeout("x")
    refused.__cause__ = ConnectionRefusedError(111, "refused")
    assert "connection refused" in str(errors.from_transport(refused, "upload"))
    unresolved = httpx.ConnectError("x")
    unresolved.__cause__ = socket.gaierror(-2, "Name or service not known")
    assert "cannot resolve the host" in str(errors.from_transport(unresolved, "chat"))
    timed_out = httpx.ConnectTimeout("x")
    timed_out.__cause__ = TimeoutError()
    assert errors.from_transport(timed_out, "chat").status == 598
