"""Structured logging (structlog): JSON lines in services, console on a TTY.

A redaction processor runs last before rendering: values of secret-looking
keys are masked, bearer tokens and known secret values are masked wherever
they appear in any string (including exception text).
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any

import structlog

from gpt4batch.common.status_line import AboveStatusLine

REDACTED = "***"

_SECRET_KEY = re.compile(
    r"(pass(word)?|token|secret|authorization|api[_-]?key|credential|cookie)", re.IGNORECASE
)
_SECRET_TEXT = [
    re.compile(r"(?i)(bearer\s+)[^\s\"',}]+"),
    re.compile(r"\bsk-[A-Za-z0-9_\-]{6,}"),
    re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),  # JWT
    re.compile(r"(?i)(\"?(?:password|access_token|token|api_key)\"?\s*[:=]\s*\"?)[^\s\"',}&]+"),
]

_known_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it later appears in a log line."""
    if value and len(value) >= 4:
        _known_secrets.add(value)


def redact_text(text: str) -> str:
    """`text` with every secret we can recognise replaced by ***."""
    for secret in _known_secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for pattern in _SECRET_TEXT:
        text = pattern.sub(lambda m: (m.group(1) if m.re.groups else "") + REDACTED, text)
    return text


def _redact_value(key: str | None, value: Any) -> Any:
    if key is not None and _SECRET_KEY.search(key) and isinstance(value, str | bytes) and value:
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, MutableMapping):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(None, v) for v in value]
    if isinstance(value, BaseException):
        return redact_text(f"{type(value).__name__}: {value}")
    return value


def redact_event(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: mask secrets in every key and value."""
    for key in list(event_dict):
        event_dict[key] = _redact_value(key if key != "event" else None, event_dict[key])
    return event_dict


#: `--log-format` values: text is the console renderer (`console` is its older name).
LOG_FORMATS = ("auto", "text", "json", "console")


def resolve_format(fmt: str, stream: Any) -> str:
    """`json` or `text`: auto is text on a terminal, JSON lines elsewhere."""
    if fmt == "auto":
        return "text" if getattr(stream, "isatty", lambda: False)() else "json"
    return "text" if fmt == "console" else fmt


def configure(
    fmt: str = "auto", level: str = "info", *, stream: Any = None, service: str | None = None
) -> None:
    """Set up structlog and the stdlib root logger for one process: every library's
    line (pynsq, tornado, asyncio) is rendered like ours, and goes above a progress bar."""
    raw = stream or sys.stderr
    fmt = resolve_format(fmt, raw)
    stream = AboveStatusLine(raw)
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        numeric = logging.INFO
    stamp: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    # Tracebacks become text before redaction, in every format: a console
    # renderer formatting `exc_info` itself would print secrets unmasked.
    render = [structlog.processors.format_exc_info, redact_event, renderer]
    structlog.configure(
        processors=[*stamp, *render],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamp, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    # pynsq is chatty at INFO (every IDENTIFY) and logs deliberate closes as errors.
    logging.getLogger("nsq").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("tornado.access").setLevel(max(numeric, logging.WARNING))
    logging.getLogger("httpx").setLevel(max(numeric, logging.WARNING))


def get_logger(name: str | None = None, **context: Any) -> Any:
    return structlog.get_logger(name).bind(**context) if context else structlog.get_logger(name)
