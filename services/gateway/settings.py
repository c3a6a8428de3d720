"""Gateway options; every one is a flag and a `GPT4BATCH_*` variable."""

from __future__ import annotations

import os

from pydantic import Field, PrivateAttr, SecretStr, model_validator

from gpt4batch.common.endpoints import parse_endpoints
from gpt4batch.common.settings import BaseServiceSettings, CommaList
from gpt4batch.services.gateway.tenants import read_key_file
from gpt4batch.services.gateway.webhooks.config import WebhookConfig, webhook_config
from gpt4batch.services.gateway.windows import MIN_FILE_EXPIRY

#: Several keys in one variable, comma-separated (`--api-key` repeats on the command line).
KEYS_ENV = "GPT4BATCH_API_KEYS"
MIB = 1024 * 1024
#: The Batch API's limit on the requests of one input file.
MAX_REQUESTS = 50_000


class GatewaySettings(BaseServiceSettings):
    """HTTP, storage, tenants, limits and pacing of the Batch API gateway."""

    port: int = Field(8080, ge=0, le=65535, description="HTTP port of the API (0: any free).")
    host: str = Field(
        "127.0.0.1",
        description="Address the API listens on; other hosts reach it through a TLS reverse "
        "proxy (docs/security.md), or give 0.0.0.0 knowingly.",
    )
    data_dir: str = Field(description="Folder for uploaded files, results and batch metadata.")
    api_key_file: str | None = Field(
        None,
        description="File of accepted bearer keys, one per line: 'name: key' (the name is what "
        "logs and metrics show) or a bare key. The preferred way to give keys.",
    )
    api_key: CommaList = Field(
        default_factory=list,
        description=f"Accepted bearer key (repeatable; also {KEYS_ENV}=k1,k2). On the command "
        "line a key is visible to every user of the host: prefer --api-key-file. "
        "Nothing is served without a key.",
    )
    window: int | None = Field(
        None,
        ge=1,
        description="Asks of one batch published but not yet answered; more wait. Default: "
        "twice the callers' concurrency (read from nsqd), 16 to 1000. A cancel finishes "
        "the published ones without upstream calls.",
    )
    max_upload_bytes: int = Field(
        200 * MIB, ge=1024, description="Largest file accepted by POST /v1/files."
    )
    max_requests_per_file: int = Field(
        MAX_REQUESTS,
        ge=1,
        description="Most requests (non-blank lines) in one uploaded file; more get a 400, "
        "as the Batch API's limit.",
    )
    max_line_bytes: int = Field(
        10 * MIB, ge=1024, description="Largest line of a batch input file."
    )
    max_body_bytes: int = Field(
        MIB, ge=1024, description="Largest request body of every route but POST /v1/files."
    )
    max_concurrent_uploads: int = Field(
        4, ge=1, description="Uploads received at once (all keys); more get 429."
    )
    max_connections: int = Field(
        256,
        ge=1,
        description="Open client connections; past it the gateway stops accepting until one "
        "closes (lowered to fit the open-files limit).",
    )
    header_timeout: float = Field(
        15.0,
        gt=0,
        description="Seconds a connection may take to send a request's headers (also the "
        "idle time of a kept-alive connection).",
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds to receive the body of a request other than an upload."
    )
    upload_timeout: float = Field(
        900.0, gt=0, description="Seconds to receive the body of POST /v1/files."
    )

    upstream_endpoints: CommaList = Field(
        default_factory=list,
        description="Endpoints the callers' upstream serves (repeatable), e.g. "
        "/v1/chat/completions alone for gpt4api.plus; a batch for another fails at "
        "validating. Default: what the callers registered on nsqd serve (all four while "
        "none is registered).",
    )
    min_file_expiry: int = Field(
        MIN_FILE_EXPIRY,
        ge=1,
        description="Shortest `expires_after` / `output_expires_after` seconds accepted "
        "(the real API's 3600; lower it to test expiry).",
    )

    consumer_check_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between checks that something (a caller) consumes the asks "
        "topic; without one, /ready answers 503 and the log says so once.",
    )

    webhook_url: str | None = Field(
        None,
        description="POST batch.completed, batch.failed, batch.expired and batch.cancelled "
        "events to this URL, signed per Standard Webhooks with --webhook-secret-file; retried "
        "with backoff while it fails, kept across restarts (docs/batch-api.md, Webhooks).",
    )
    webhook_secret_file: str | None = Field(
        None,
        description="File holding the secret that signs webhook events: 'whsec_' and the "
        "base64 of 24 to 64 random bytes (mode 600). The preferred way to give it.",
    )
    webhook_secret: SecretStr | None = Field(
        None,
        description="The webhook secret itself; prefer --webhook-secret-file or this "
        "environment variable (a flag's value is visible to every user of the host).",
    )
    webhook_timeout: float = Field(
        10.0, gt=0, description="Seconds one webhook attempt may take, answer included."
    )
    webhook_max_attempts: int = Field(
        23,
        ge=1,
        description="Attempts at one webhook event before it is given up (logged); with "
        "the default delays the last comes about 25 h after the first.",
    )
    webhook_retry_delay: float = Field(
        5.0,
        gt=0,
        description="Seconds before a webhook event's first retry; doubled for each next "
        "one, at most 2 h apart.",
    )
    webhook_max_pending: int = Field(
        10000,
        ge=1,
        description="Undelivered webhook events kept in the outbox; past it a new event is "
        "dropped (logged and counted).",
    )

    _key_entries: list[tuple[str | None, str]] = PrivateAttr(default_factory=list)
    _webhooks: WebhookConfig | None = PrivateAttr(None)

    @model_validator(mode="after")
    def _endpoints(self) -> GatewaySettings:
        try:
            self.upstream_endpoints = list(parse_endpoints(self.upstream_endpoints))
        except ValueError as exc:
            raise ValueError(f"--upstream-endpoints: {exc}") from None
        return self

    @model_validator(mode="after")
    def _keys(self) -> GatewaySettings:
        extra = os.environ.get(KEYS_ENV, "")
        self.api_key = [*self.api_key, *(k.strip() for k in extra.split(",") if k.strip())]
        from_file = read_key_file(self.api_key_file) if self.api_key_file else []
        self._key_entries = [*from_file, *((None, k) for k in self.api_key)]
        if not self._key_entries:
            raise ValueError(
                f"no API key: give --api-key-file FILE (lines 'name: key') or {KEYS_ENV}; "
                "the gateway serves nothing without one"
            )
        secret = self.webhook_secret.get_secret_value() if self.webhook_secret else None
        self._webhooks = webhook_config(
            self.webhook_url,
            self.webhook_secret_file,
            secret,
            timeout=self.webhook_timeout,
            max_attempts=self.webhook_max_attempts,
            retry_delay=self.webhook_retry_delay,
            max_pending=self.webhook_max_pending,
        )
        return self

    @property
    def key_entries(self) -> list[tuple[str | None, str]]:
        """(name or None, key) of every accepted key: the file's first."""
        return list(self._key_entries)

    @property
    def webhooks(self) -> WebhookConfig | None:
        """The checked webhook options; None when --webhook-url is not given."""
        return self._webhooks
