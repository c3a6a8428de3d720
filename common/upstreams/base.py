"""The interface the caller drives, and the HTTP plumbing every client shares.

One conversation is a sequence of asks. The caller keeps a `ConversationState`
and calls `client.run_ask(state, ask, ...)` for each ask in order, passing the
returned state to the next ask. Retrying is the caller's job: a client raises
`RetryableError`/`FinalError` and leaves `state` untouched on failure, so the
same ask can be sent again with the same state.

Every HTTP request goes through `before_call(endpoint)` first (uploads, chats,
and each retry the caller makes), so the caller can rate-limit all of them. A
model call (endpoint `chat`/`completions`) with a JSON body also goes through a
`TokenMeter` when one is given (the token limit, `--tpm`): `reserve(body)` before
`before_call`, `started` right after it, then `settle(answer)` or, on a 429,
`rate_limited`.
"""

from __future__ import annotations

import io
import json
import os
import stat
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
import pydantic_core

from gpt4batch.common.errors import FinalError
from gpt4batch.common.messages import Ask, AskOverrides
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.config import UpstreamConfig, origin
from gpt4batch.common.upstreams.transport import (
    REMAINING_TOKENS,
    RESET_TOKENS,
    JsonReply,
    read_httpx,
)

#: Awaited right before every upstream HTTP request, with the endpoint name
#: (`upload`, `chat`, `completions`, `embeddings`, `responses`, `models`); a rate
#: limiter's `acquire`.
BeforeCall = Callable[[str], Awaitable[None]]

Answer = dict[str, Any]

#: The endpoints whose calls take model tokens (what a `TokenMeter` sees).
MODEL_ENDPOINTS = frozenset({"chat", "completions", "embeddings", "responses"})


class TokenMeter(Protocol):
    """A token limit's side of each model call (services/caller/limits/tokens.py)."""

    async def reserve(self, body: Any) -> Any:
        """Wait until the call's estimated tokens fit; a ticket for the calls below."""
        ...

    def started(self, ticket: Any) -> bool:
        """The call goes now (stamped), or False: a 429 pause began while it waited for
        its calls/s slot; its tokens are released and it must reserve again."""
        ...

    def settle(self, ticket: Any, answer: Any) -> None: ...

    def rate_limited(
        self,
        ticket: Any,
        retry_after: str | None,
        reset_tokens: str | None,
        remaining_tokens: str | None = None,
    ) -> None: ...


class FileOpener(Protocol):
    """Opens an ask's file for upload: `open_local`, or the caller's path policy, which
    checks the opened file itself (where it is, whether it is the credentials file)."""

    def __call__(self, path: str, limit: int) -> LocalFile: ...


@dataclass(frozen=True)
class ConversationState:
    """What chains one ask to the next.

    gpt4api uses `conversation_id` and `parent_message_id` (the previous
    answer's `message_id`); OpenAI-style kinds carry the growing `messages`.
    """

    conversation_id: str | None = None
    parent_message_id: str | None = None
    messages: tuple[dict[str, Any], ...] = field(default_factory=tuple)


class ConversationClient(Protocol):
    """What every upstream client offers the caller."""

    kind: str

    async def run_ask(
        self,
        state: ConversationState,
        ask: Ask,
        *,
        base_dir: str | None = None,
        overrides: AskOverrides | None = None,
        uploaded: dict[str, Any] | None = None,
    ) -> tuple[Answer, ConversationState]:
        """Upload the ask's own images/files, chat, and return (answer, next state).

        `uploaded` is kept by the caller across retries of this one ask: a client
        that uploads records each upload's answer there and reuses it on the next
        try, so a failed chat does not pay for its uploads again.
        """
        ...


async def _no_limit(endpoint: str) -> None:
    return None


class HttpBase:
    """An injected `httpx.AsyncClient` plus the hook, headers and error mapping."""

    kind = "base"

    def __init__(
        self,
        config: UpstreamConfig,
        http: httpx.AsyncClient,
        *,
        before_call: BeforeCall | None = None,
        open_file: FileOpener | None = None,
        tokens: TokenMeter | None = None,
    ) -> None:
        self.config = config
        self.http = http
        self.before_call: BeforeCall = before_call or _no_limit
        self.open_file: FileOpener = open_file or open_local
        self.tokens = tokens
        # What every call with this client's own config sends along, built once.
        self._headers = config.headers()
        self._timeouts = {False: config.timeout(), True: config.timeout(upload=True)}
        self._origins = config.token_origins()
        self._json_call = getattr(http, "json_call", None)  # UpstreamHttp: plain aiohttp

    def __repr__(self) -> str:
        return f"<{type(self).__name__} kind={self.kind} base_url={self.config.base_url!r}>"

    async def request_json(
        self,
        endpoint: str,
        method: str,
        url: str,
        config: UpstreamConfig,
        *,
        upload: bool = False,
        raw: bool = False,
        **kwargs: Any,
    ) -> Any:
        """One request whose 2xx answer must be JSON; everything else becomes our errors.
        With `raw`: (the parsed answer, the bytes received)."""
        if config is self.config:
            headers, timeout = self._headers, self._timeouts[upload]
            check_host(endpoint, url, config, self._origins)
        else:  # per-message overrides: a copy (its token, URLs and timeouts are the same)
            headers, timeout = config.headers(), config.timeout(upload=upload)
            check_host(endpoint, url, config)
        if upload:  # the upstream's refusal (503, 401, 413) arrives before the file is sent
            headers = {**headers, **EXPECT_CONTINUE}
        meter = self.tokens if endpoint in MODEL_ENDPOINTS else None
        ticket = await start_call(meter, self.before_call, endpoint, kwargs.get("json"))
        json_call = self._json_call
        if json_call is not None and kwargs.keys() <= {"json"}:
            reply = await json_call(
                endpoint,
                method,
                url,
                headers=headers,
                timeout=timeout,
                body=kwargs.get("json"),
                limit=config.max_answer_bytes,
            )
        else:
            try:
                async with self.http.stream(
                    method, url, headers=headers, timeout=timeout, **kwargs
                ) as response:
                    body = await read_httpx(response, endpoint, config.max_answer_bytes)
            except httpx.HTTPError as exc:
                raise errors.from_transport(exc, endpoint) from None
            reply = JsonReply(
                response.status_code,
                response.headers.get("retry-after"),
                body,
                response.headers.get(RESET_TOKENS),
                response.headers.get(REMAINING_TOKENS),
            )
        if meter is not None and reply.status == 429:
            meter.rate_limited(
                ticket, reply.retry_after, reply.reset_tokens, reply.remaining_tokens
            )
        if reply.status >= 300:
            raise errors.from_status(
                reply.status,
                endpoint,
                reply.body.decode("utf-8", "replace"),
                retry_after=reply.retry_after,
                secret=config.secret(),
            )
        answer = parse_json(reply.body, endpoint)
        if ticket is not None:
            meter.settle(ticket, answer)  # type: ignore[union-attr]
        return (answer, reply.body) if raw else answer


#: Sent with an upload: the file goes once the upstream said 100 Continue, so an upstream
#: that refuses at once (503 in its prepare step, a proxy's 401/413) is read as that answer.
#: Without it, a server closing the connection on the unread file reset it, and the answer
#: was lost: the record said "connection closed" or "timed out" instead of HTTP 503.
EXPECT_CONTINUE = {"Expect": "100-continue"}


async def start_call(
    meter: TokenMeter | None, before_call: BeforeCall, endpoint: str, body: Any
) -> Any:
    """Reserve the call's tokens, then its calls/s slot; both again if a 429 pause began
    meanwhile (so the calls queued for slots do not all go at its end). The ticket."""
    if meter is None:
        await before_call(endpoint)
        return None
    while True:
        ticket = await meter.reserve(body)
        await before_call(endpoint)
        if meter.started(ticket):
            return ticket


def parse_json(body: bytes, endpoint: str) -> Any:
    """An answer's JSON: parsed by pydantic-core (a third of `json.loads`'s CPU), or where
    it refuses (e.g. a lone surrogate escape) by `json.loads`, which decides as before."""
    try:
        return pydantic_core.from_json(body)
    except ValueError:
        pass
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.bad_response(endpoint, "answer is not valid JSON") from None


def check_host(
    endpoint: str, url: str, config: UpstreamConfig, origins: frozenset[str] | None = None
) -> None:
    """FinalError unless `url` is on a host the operator configured (the token goes along).

    `origins`: `config.token_origins()` computed before (a client's own config)."""
    if origin(url) not in (config.token_origins() if origins is None else origins):
        host = urlsplit(url).hostname
        raise FinalError(
            errors.UNTRUSTED_HOST,
            f"{endpoint}: {host} is not a configured upstream host; not sending the token "
            "there (configure the URL for this call, e.g. --gizmo-url)",
        )


def resolve(path: str, base_dir: str | None) -> str:
    """An ask's path, relative ones taken from the input file's folder."""
    if base_dir and not os.path.isabs(path):
        return os.path.join(base_dir, path)
    return path


class LocalFile(io.RawIOBase):
    """An open regular file that reads no further than the size it had when opened.

    httpx sizes a multipart upload with tell/seek and streams it with read, so
    a file that grows while it is sent (or a /proc file whose size says 0) can
    never make the upload longer than what was checked.
    """

    def __init__(self, fd: int, size: int, name: str) -> None:
        super().__init__()
        self.fd = fd
        self.size = size
        self.name = name
        self.pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        want = min(len(buffer), self.size - self.pos)
        if want <= 0:
            return 0
        data = os.pread(self.fd, want, self.pos)
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self.pos, os.SEEK_END: self.size}[whence]
        self.pos = max(0, base + offset)
        return self.pos

    def tell(self) -> int:
        return self.pos

    def close(self) -> None:
        if not self.closed:
            os.close(self.fd)
        super().close()


def open_local(path: str, limit: int) -> LocalFile:
    """Open an ask's file for upload: a regular file of at most `limit` bytes, or FinalError.

    Opened with O_NONBLOCK (a FIFO cannot block the open), and the type and size
    are checked on the open file (fstat), not on the path, so /dev/zero, a FIFO
    or a file swapped after a check is refused instead of hanging the caller.
    """
    name = os.path.basename(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise FinalError(errors.LOCAL_FILE, f"cannot read {name}: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise FinalError(errors.LOCAL_FILE, f"{name} is not a regular file; refusing it")
        if info.st_size > limit:
            raise FinalError(
                errors.TOO_LARGE,
                f"{name} is {info.st_size} bytes, over the {limit // (1024 * 1024)} MB "
                "upload limit",
            )
    except BaseException:
        os.close(fd)
        raise
    return LocalFile(fd, info.st_size, name)
