"""Secrets never reach a log line, whatever shape they arrive in."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from gpt4batch.common import logging as glog

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlLXNlY3JldA"


@pytest.fixture
def captured() -> io.StringIO:
    stream = io.StringIO()
    glog.configure("json", "debug", stream=stream)
    yield stream
    structlog.reset_defaults()


@pytest.mark.parametrize(
    ("kwargs", "secret"),
    [
        ({"access_token": "abc123secret"}, "abc123secret"),
        ({"password": "hunter22"}, "hunter22"),
        ({"headers": {"Authorization": "Bearer abc123secret"}}, "abc123secret"),
        ({"detail": f"got 401 for token {TOKEN}"}, TOKEN),
        ({"url": "http://x/y?access_token=abc123secret&a=1"}, "abc123secret"),
        ({"body": '{"email": "a@b", "password": "hunter22"}'}, "hunter22"),
        ({"key": "sk-ABCDEFGH12345678"}, "sk-ABCDEFGH12345678"),
        ({"items": ["Bearer abc123secret"]}, "abc123secret"),
    ],
)
def test_secrets_are_masked_in_structlog_lines(
    captured: io.StringIO, kwargs: dict, secret: str
) -> None:
    glog.get_logger("t").info("event", **kwargs)
    line = captured.getvalue()
    assert secret not in line
    assert glog.REDACTED in line
    json.loads(line)  # still one valid JSON line


def test_registered_secret_is_masked_everywhere(captured: io.StringIO) -> None:
    glog.register_secret("plainvalue-without-shape")
    glog.get_logger("t").info("plainvalue-without-shape in the event text")
    logging.getLogger("nsq").warning("stdlib says plainvalue-without-shape")
    assert "plainvalue-without-shape" not in captured.getvalue()
    assert captured.getvalue().count(glog.REDACTED) == 2


def test_exceptions_are_masked(captured: io.StringIO) -> None:
    try:
        raise RuntimeError("upstream said: Authorization: Bearer abc123secret")
    except RuntimeError:
        glog.get_logger("t").exception("call failed")
    assert "abc123secret" not in captured.getvalue()
    assert "call failed" in captured.getvalue()


def test_harmless_values_are_left_alone(captured: io.StringIO) -> None:
    glog.get_logger("t").info("done", tokens_used=12, record_id="id: 0", rate=2.5)
    event = json.loads(captured.getvalue())
    assert event["record_id"] == "id: 0"
    assert event["rate"] == 2.5
    assert event["tokens_used"] == 12


def test_console_tracebacks_are_masked_too() -> None:
    stream = io.StringIO()
    glog.configure("console", "debug", stream=stream)
    glog.register_secret("console-secret-value")
    try:
        raise RuntimeError("token console-secret-value and Bearer abc123secret")
    except RuntimeError:
        glog.get_logger("t").warning("failed", exc_info=True)
    structlog.reset_defaults()
    text = stream.getvalue()
    assert "RuntimeError" in text
    assert "console-secret-value" not in text and "abc123secret" not in text
