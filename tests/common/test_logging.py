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


def test_library_lines_are_json_like_ours(captured: io.StringIO) -> None:
    structlog.contextvars.bind_contextvars(service="caller")
    try:
        logging.getLogger("nsq.conn").warning("[%s] connection closed", "127.0.0.1:4150")
        glog.get_logger("t").warning("ours")
    finally:
        structlog.contextvars.unbind_contextvars("service")
    theirs, ours = (json.loads(line) for line in captured.getvalue().splitlines())
    assert theirs["event"] == "[127.0.0.1:4150] connection closed"
    assert theirs["level"] == "warning" and theirs["logger"] == "nsq.conn"
    assert set(ours) - {"logger"} <= set(theirs)  # same keys: level, timestamp, service
    assert theirs["service"] == "caller"


def test_library_tracebacks_are_rendered_and_masked(captured: io.StringIO) -> None:
    try:
        raise RuntimeError("Bearer abc123secret")
    except RuntimeError:
        logging.getLogger("tornado.general").exception("callback failed")
    (line,) = captured.getvalue().splitlines()
    event = json.loads(line)
    assert "RuntimeError" in event["exception"]
    assert "abc123secret" not in line


def test_text_format_renders_library_lines_as_text() -> None:
    stream = io.StringIO()
    glog.configure("text", "info", stream=stream)
    logging.getLogger("nsq").warning("library line")
    glog.get_logger("t").info("our line")
    structlog.reset_defaults()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2 and not any(line.startswith("{") for line in lines)
    assert "[warning  ] library line" in lines[0] and "[info     ] our line" in lines[1]


def screen(written: str) -> list[str]:
    """What a terminal shows for `written`: \\r returns to the column 0, ESC[K clears."""
    lines, column = [""], 0
    i = 0
    while i < len(written):
        if written.startswith("\x1b[K", i):
            lines[-1] = lines[-1][:column]
            i += 3
            continue
        char = written[i]
        if char == "\r":
            column = 0
        elif char == "\n":
            lines.append("")
            column = 0
        else:
            line = lines[-1]
            lines[-1] = line[:column] + char + line[column + 1 :]
            column += 1
        i += 1
    return lines


def test_a_log_line_goes_above_the_progress_bar_not_into_it() -> None:
    from gpt4batch.common.status_line import StatusLine

    stream = io.StringIO()
    glog.configure("text", "info", stream=stream)
    bar = StatusLine(stream)
    try:
        bar.show("[#####...............] 5/20")
        glog.get_logger("t").warning("first")
        logging.getLogger("nsq").warning("second")
        bar.show("[##########..........] 10/20")
        bar.finish()
        glog.get_logger("t").info("after")
    finally:
        structlog.reset_defaults()
    shown = screen(stream.getvalue())
    assert "first" in shown[0] and "[####" not in shown[0]
    assert "second" in shown[1] and "[####" not in shown[1]
    assert shown[2] == "[##########..........] 10/20"
    assert "after" in shown[3] and shown[4] == ""
