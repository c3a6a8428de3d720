"""The HTTP client under the upstream clients: httpx's API, and plain aiohttp for JSON calls.

The clients take one injected `httpx.AsyncClient` (the seam tests use with
their own clients and mock transports). `UpstreamHttp` is the one the
services inject: still an `httpx.AsyncClient` (uploads, streamed answers and
anything else go through httpx, over aiohttp), plus `json_call`, which
`HttpBase.request_json` takes for a JSON request when it is there. That call
skips httpx's request and response models: per chat at 64 in flight 361–434 µs
of caller CPU through httpx against 130–161 µs with a plain aiohttp session
(bench/http_transport.py). Both paths share one aiohttp connection pool.
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
import yarl
from httpx_aiohttp import AiohttpTransport

from gpt4batch.common.bounded_body import BodyTooLarge, BoundedBody, UnsupportedEncoding
from gpt4batch.common.tls import client_context
from gpt4batch.common.upstreams import errors
from gpt4batch.common.upstreams.config import MAX_ANSWER_BYTES

#: JSON request bodies: compact, UTF-8 as is, no NaN (one encoder, not one per call).
_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)

#: OpenAI's header: how long until the token limit has room again (`1s`, `6m0s`, `20ms`).
RESET_TOKENS = "x-ratelimit-reset-tokens"
#: OpenAI's header: tokens left in the current window (on a 429: whether tokens ran out).
REMAINING_TOKENS = "x-ratelimit-remaining-tokens"

#: (endpoint, HTTP status, seconds) of every completed JSON call, for metrics.
Observer = Callable[[str, int, float], None]


@dataclass(frozen=True, slots=True)
class JsonReply:
    """A fully read answer: status, the Retry-After header, the raw body, and on a 429
    OpenAI's `x-ratelimit-reset-tokens` (a token limit's pause) and
    `x-ratelimit-remaining-tokens` (whether the token limit is what refused)."""

    status: int
    retry_after: str | None
    body: bytes
    reset_tokens: str | None = None
    remaining_tokens: str | None = None


class UpstreamHttp(httpx.AsyncClient):
    """The process's pooled upstream client (see the module docstring)."""

    def __init__(
        self,
        max_connections: int,
        *,
        observe: Observer | None = None,
        **httpx_kwargs: Any,
    ) -> None:
        self._max_connections = max_connections
        self._session: aiohttp.ClientSession | None = None
        self._observe = observe
        self._urls: dict[str, yarl.URL] = {}
        self._timeouts: dict[tuple[float | None, ...], aiohttp.ClientTimeout] = {}
        # Built now, not at the first call: loading the CA bundle takes tens of ms, which
        # would land between a paced start and its arrival at the upstream.
        # One context for both paths, shared by the process (common/tls.py).
        self._ssl = client_context()
        limits = httpx.Limits(
            max_connections=max_connections, max_keepalive_connections=max_connections
        )
        transport = AiohttpTransport(verify=self._ssl, limits=limits, client=self.session)
        super().__init__(limits=limits, transport=transport, **httpx_kwargs)

    def session(self) -> aiohttp.ClientSession:
        """The shared aiohttp session, created on first use inside the running loop."""
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=self._max_connections, ssl=self._ssl)
            self._session = aiohttp.ClientSession(
                connector=connector, cookie_jar=aiohttp.DummyCookieJar()
            )
        return self._session

    async def json_call(
        self,
        endpoint: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        timeout: httpx.Timeout,
        body: Any = None,
        limit: int = MAX_ANSWER_BYTES,
    ) -> JsonReply:
        """One request with a JSON body (or none), read whole up to `limit` bytes after
        decompression (else FinalError); transport failures become the upstream error
        model's retryable TIMEOUT/CONNECTION errors."""
        data = None
        if body is not None:
            # A payload object (not bytes) skips aiohttp's payload-type lookup and brings its
            # own Content-Type, so the caller's headers are sent as given.
            data = aiohttp.payload.BytesPayload(
                _JSON.encode(body).encode(), content_type="application/json"
            )
        started = time.perf_counter()
        try:
            async with self.session().request(
                method,
                self._url(url),
                data=data,
                headers=headers,
                timeout=self._client_timeout(timeout),
                allow_redirects=False,
            ) as response:
                headers = response.headers
                reply = JsonReply(
                    response.status,
                    headers.get("Retry-After"),
                    await _read_aiohttp(response, endpoint, limit),
                    headers.get(RESET_TOKENS) if response.status == 429 else None,
                    headers.get(REMAINING_TOKENS) if response.status == 429 else None,
                )
        except (TimeoutError, aiohttp.ClientError) as exc:  # aiohttp's timeouts: TimeoutErrors
            raise errors.from_transport(exc, endpoint) from None
        if self._observe is not None:
            self._observe(endpoint, reply.status, time.perf_counter() - started)
        return reply

    def _url(self, url: str) -> yarl.URL:
        """The parsed URL (a few distinct ones per process: parsed once each)."""
        parsed = self._urls.get(url)
        if parsed is None:
            if len(self._urls) >= 1024:
                self._urls.clear()
            parsed = self._urls[url] = yarl.URL(url)
        return parsed

    def _client_timeout(self, timeout: httpx.Timeout) -> aiohttp.ClientTimeout:
        key = (timeout.connect, timeout.read, timeout.pool)
        found = self._timeouts.get(key)
        if found is None:
            found = self._timeouts[key] = aiohttp.ClientTimeout(
                sock_connect=timeout.connect, sock_read=timeout.read, connect=timeout.pool
            )
        return found

    async def aclose(self) -> None:
        await super().aclose()  # closes the transport, which closes a session it used
        await self._close_session()

    async def __aexit__(self, *exc_info: Any) -> None:
        await super().__aexit__(*exc_info)  # httpx's exit closes the transport, not aclose()
        await self._close_session()

    async def _close_session(self) -> None:
        if self._session is not None and not self._session.closed:
            await self._session.close()
            await asyncio.sleep(0)  # let aiohttp's connection close callbacks run


async def _read_aiohttp(response: aiohttp.ClientResponse, endpoint: str, limit: int) -> bytes:
    """The body, at most `limit` bytes after decompression (aiohttp inflates it in bounded
    steps; the pieces are counted as they come), else `errors.answer_too_large`."""
    declared = response.content_length
    if declared is not None and declared > limit:
        raise errors.answer_too_large(endpoint, limit)
    if declared is not None and "Content-Encoding" not in response.headers:
        return await response.read()  # exactly `declared` bytes: the common, fast case
    pieces: list[bytes] = []
    size = 0
    async for piece in response.content.iter_any():
        size += len(piece)
        if size > limit:
            raise errors.answer_too_large(endpoint, limit)
        pieces.append(piece)
    return b"".join(pieces)


async def _decoded(response: httpx.Response, endpoint: str, limit: int) -> AsyncIterator[bytes]:
    """A streamed httpx response's body in decoded pieces of at most 64 KB, capped at
    `limit` bytes after decompression (httpx's own decoder inflates each network chunk
    whole: 64 KB of a gzip bomb became 64 MB at once)."""
    try:
        body = BoundedBody(response.headers.get("content-encoding"), limit)
        async for raw in response.aiter_raw():
            for piece in body.feed(raw):
                yield piece
        for piece in body.flush():
            yield piece
    except BodyTooLarge:
        raise errors.answer_too_large(endpoint, limit) from None
    except (UnsupportedEncoding, zlib.error) as exc:
        raise errors.bad_response(endpoint, f"undecodable body ({exc})") from None


async def read_httpx(response: httpx.Response, endpoint: str, limit: int) -> bytes:
    """The whole body of a streamed httpx response, capped as `_decoded` says."""
    return b"".join([piece async for piece in _decoded(response, endpoint, limit)])


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


async def read_lines(response: httpx.Response, endpoint: str, limit: int) -> AsyncIterator[str]:
    """The body's text lines (an SSE stream), capped as `_decoded` says."""
    text = codecs.getincrementaldecoder("utf-8")("replace")
    line: list[str] = []  # the line being received, in pieces
    async for piece in _decoded(response, endpoint, limit):
        parts = _LINE_BREAK.split(text.decode(piece))
        line.append(parts[0])
        if len(parts) == 1:
            continue
        yield "".join(line)
        for whole in parts[1:-1]:
            yield whole
        line = [parts[-1]]
    rest = "".join(line) + text.decode(b"", final=True)
    if rest:
        yield rest
