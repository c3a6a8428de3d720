"""How to reach one upstream: kind, URLs, credentials, model and timeouts."""

from __future__ import annotations

import functools
from typing import Literal
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.messages import AskOverrides, UpstreamKind

DEFAULT_GPT4API_BASE = "https://beta.gpt4api.plus"

#: gpt4api.plus refuses uploads above this size (seed 001: 100M).
MAX_UPLOAD_BYTES = 100 * 1024 * 1024

#: Largest answer body read, after decompression (a chat answer is kilobytes; a gzip
#: bomb of 150 KB inflated to 150 MB and lifted the caller to 693 MB).
MAX_ANSWER_BYTES = 8 * 1024 * 1024


class Sampling(BaseModel):
    """OpenAI-style sampling parameters; only the ones set are sent."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    max_tokens: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def as_body(self) -> dict[str, float | int]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class UpstreamConfig(BaseModel):
    """Settings of one upstream; per-message `AskOverrides` win over them."""

    model_config = ConfigDict(extra="forbid")

    kind: UpstreamKind = "gpt4api"
    base_url: str | None = Field(
        default=None,
        description="None: the default host, unless explicit URLs are given (then only those).",
    )
    tier: Literal["standard", "concurrent"] = "standard"
    chat_url: str | None = Field(
        default=None, description="Full chat URL; wins over base_url/tier (the original's --url)."
    )
    gizmo_url: str | None = Field(default=None, description="Full gizmos URL (gpt4api).")
    upload_url: str | None = Field(
        default=None, description="Full upload URL (the original's --upload_url)."
    )
    access_token: SecretStr | None = None
    auth_scheme: str = Field(
        default="Bearer", description="Authorization prefix; empty sends the bare token."
    )
    model: str | None = Field(default=None, description="None: each kind's usual default.")
    gizmo_id: str | None = None
    history_and_training_disabled: bool = True
    stream: bool = Field(default=False, description="OpenAI kind: ask for an SSE stream.")
    sampling: Sampling = Field(default_factory=Sampling)
    connect_timeout: float = 10.0
    read_timeout: float = Field(
        default=480.0, description="Chat read timeout; 8 min like the original."
    )
    upload_read_timeout: float = 120.0
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_answer_bytes: int = MAX_ANSWER_BYTES

    def with_overrides(self, overrides: AskOverrides | None) -> UpstreamConfig:
        """A copy with the message's overrides applied (the `upstream` kind is the caller's)."""
        if overrides is None:
            return self
        changes = overrides.model_dump(exclude_none=True, exclude={"upstream"})
        sampling = {k: changes.pop(k) for k in list(changes) if k in Sampling.model_fields}
        if sampling:
            changes["sampling"] = self.sampling.model_copy(update=sampling)
        return self.model_copy(update=changes) if changes else self

    def timeout(self, *, upload: bool = False) -> httpx.Timeout:
        read = self.upload_read_timeout if upload else self.read_timeout
        return httpx.Timeout(connect=self.connect_timeout, read=read, write=read, pool=None)

    def headers(self) -> dict[str, str]:
        if self.access_token is None:
            return {}
        token = self.access_token.get_secret_value()
        return {"Authorization": f"{self.auth_scheme} {token}" if self.auth_scheme else token}

    def secret(self) -> str | None:
        return self.access_token.get_secret_value() if self.access_token else None

    def base(self) -> str:
        """The base URL paths are joined to: `base_url`, else the default host."""
        return self.base_url or DEFAULT_GPT4API_BASE

    def url(self, path: str) -> str:
        return self.base().rstrip("/") + "/" + path.lstrip("/")

    def explicit_urls(self) -> dict[str, str]:
        """The URLs the operator gave, by flag."""
        given = {
            "--base-url": self.base_url,
            "--chat-url": self.chat_url,
            "--gizmo-url": self.gizmo_url,
            "--upload-url": self.upload_url,
        }
        return {flag: url for flag, url in given.items() if url}

    def token_origins(self) -> frozenset[str]:
        """The origins the token may go to: those of the configured URLs.

        The default host counts only when no URL at all was configured, so a
        caller set up with `--chat-url` alone never sends its token elsewhere.
        """
        urls = list(self.explicit_urls().values()) or [DEFAULT_GPT4API_BASE]
        return frozenset(origin(u) for u in urls)

    def check_urls(self) -> None:
        """ConfigError naming the flag of a URL that is not http(s)://host."""
        for flag, url in self.explicit_urls().items():
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                shown = parts.scheme or "none"
                raise ConfigError(
                    f"{flag}: unsupported URL scheme {shown!r} in {url!r} (use http:// or https://)"
                )
            if not parts.hostname:
                raise ConfigError(f"{flag}: no host in {url!r}")


@functools.lru_cache(maxsize=256)
def origin(url: str) -> str:
    """`scheme://host:port` of a URL, with the scheme's default port made explicit.

    Cached: the caller checks the origin of every request's URL, and those URLs are the
    few its configuration builds."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
    return f"{parts.scheme}://{(parts.hostname or '').lower()}:{port}"
