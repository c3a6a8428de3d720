"""The webhook options checked together: a URL and its secret, or neither.

The secret comes from `--webhook-secret-file` (preferred: a file of mode 600)
or `GPT4BATCH_WEBHOOK_SECRET`; `--webhook-secret` works too, warned about at
parse time as every secret flag is (common/credentials.py `SECRET_FLAGS`),
since every user of the host reads argv.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from gpt4batch.common.credentials import read_secret_file
from gpt4batch.common.errors import ConfigError
from gpt4batch.services.gateway.webhooks.signing import WebhookSecret

SECRET_FLAG = "--webhook-secret"
SECRET_ENV = "GPT4BATCH_WEBHOOK_SECRET"
#: The longest wait between two attempts at one event (seconds).
MAX_RETRY_DELAY = 7200.0


@dataclass(frozen=True)
class WebhookConfig:
    url: str
    secret: WebhookSecret
    timeout: float  # one attempt, answer included
    max_attempts: int
    retry_delay: float  # before the first retry; doubled for each next one
    max_pending: int  # events in the outbox


def webhook_config(
    url: str | None,
    secret_file: str | None,
    secret: str | None,
    *,
    timeout: float,
    max_attempts: int,
    retry_delay: float,
    max_pending: int,
) -> WebhookConfig | None:
    """The webhook settings, None when off; ConfigError (one line, never the secret) when
    they do not go together or the secret is not a `whsec_…` secret."""
    if secret_file and secret:
        raise ConfigError(f"give either {SECRET_FLAG}-file or {SECRET_FLAG}/{SECRET_ENV}, not both")
    if not url:
        if secret_file or secret:
            raise ConfigError("a webhook secret is given but no --webhook-url to send to")
        return None
    check_url(url)
    if secret_file:
        where = f"{SECRET_FLAG}-file {secret_file}"
        text = read_secret_file(Path(secret_file), f"{SECRET_FLAG}-file")
    elif secret:
        where, text = f"{SECRET_FLAG} / {SECRET_ENV}", secret.strip()
    else:
        raise ConfigError(
            f"--webhook-url needs the secret that signs the events: {SECRET_FLAG}-file FILE "
            f"(or {SECRET_ENV})"
        )
    return WebhookConfig(
        url=url,
        secret=WebhookSecret(text, where),
        timeout=timeout,
        max_attempts=max_attempts,
        retry_delay=retry_delay,
        max_pending=max_pending,
    )


def check_url(url: str) -> None:
    """ConfigError unless `url` is an absolute http(s) URL."""
    parts = urlsplit(url)
    try:
        good = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
    except ValueError:  # a port that is not a number
        good = False
    if not good:
        shown = redacted_url(url)
        raise ConfigError(f"--webhook-url {shown!r}: expected http(s)://host[:port]/path")


def redacted_url(url: str) -> str:
    """The URL as logs show it: no user, password, query or fragment (they may hold tokens)."""
    parts = urlsplit(url)
    try:
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        port = ""
    return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
