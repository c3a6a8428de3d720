"""`mock-upstream --fast`: the chat endpoints on a bare asyncio HTTP/1.1 server, for load.

The same simulator (SimState: token, --qps, latency, conversation chaining,
/stats; answers from `handlers.chat_reply`), without tornado's request
machinery, so a benchmark's two cores go to the system under test rather than
to the stand-in (tornado: ~0.4 s of CPU per 1,000 chats). Served:
`POST /{tier}/all-tools|gizmos` and `/stats` (GET; POST /stats/reset). Anything
else is a 404 naming the full simulator, and no faults are injected: tests
use the full one.
"""

from __future__ import annotations

import asyncio
import json
import math
from typing import Any

from gpt4batch.services.mock_upstream.handlers import chat_reply
from gpt4batch.services.mock_upstream.keys import key_id
from gpt4batch.services.mock_upstream.options import Options
from gpt4batch.services.mock_upstream.state import SimState, now

_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
_REASONS.update({409: "Conflict", 413: "Payload Too Large", 429: "Too Many Requests"})
_MAX_HEAD = 64 * 1024
_MAX_BODY = 10 * 1024 * 1024


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def response(status: int, value: Any, extra: str = "") -> bytes:
    body = _dumps(value)
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


class _Connection(asyncio.Protocol):
    """One client connection; requests are answered in order, one at a time."""

    def __init__(self, sim: SimState, base: str) -> None:
        self.sim = sim
        self.base = base
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.busy:
            self._next()

    def _next(self) -> None:
        """Handle the next complete request in the buffer, if there is one."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > _MAX_HEAD:
                self._close()
            return
        lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.rsplit(" ", 1)[0].split("?", 1)[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length") or 0)
        if length > _MAX_BODY:
            self._close()
            return
        if len(self.buffer) < end + 4 + length:
            return  # the body is still coming
        body = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        self.busy = True
        self._handle(method, path, headers, body)

    def _handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> None:
        sim = self.sim
        if path in ("/stats", "/stats/reset"):
            if method == "POST":
                sim.reset()
                self._send(response(200, {"reset": True}))
            else:
                self._send(response(200, sim.stats.as_json()))
            return
        parts = path.strip("/").split("/")
        chat = len(parts) == 2 and parts[0] in ("standard", "concurrent")
        if method != "POST" or not chat or parts[1] not in ("all-tools", "gizmos"):
            detail = f"{method} {path} is not served by mock-upstream --fast (run it without)"
            self._send(response(404, {"detail": detail}))
            return
        t = now()
        sim.stats.started(parts[1], t)
        value = headers.get("authorization", "")
        token = value[7:] if value[:7].lower() == "bearer " else value
        key = key_id(token.strip())
        if not sim.accepts(token.strip(), t):
            sim.stats.unauthorized += 1
            self._answer(response(401, {"detail": "invalid or missing access token"}))
            return
        wait = sim.over_qps(t)
        if wait is not None:
            sim.stats.rate_limited += 1
            retry = f"Retry-After: {max(1, math.ceil(wait))}\r\n"
            self._answer(response(429, {"detail": "too many requests"}, retry))
            return
        delay = sim.delay()
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self._chat, parts[1], body, key)
        else:
            self._chat(parts[1], body, key)

    def _chat(self, kind: str, raw: bytes, key: str) -> None:
        try:
            body = json.loads(raw or b"null")
        except (ValueError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self._answer(response(400, {"detail": "body must be a JSON object"}), key)
            return
        self._answer(response(*chat_reply(self.sim, kind, body, self.base, key)), key)

    def _answer(self, data: bytes, key: str | None = None) -> None:
        """Send an answer; `key`: the accepted key the call was counted under (keys.py)."""
        self.sim.stats.in_flight -= 1
        if key is not None:
            self.sim.keys.answered(key, self.sim.stats.key_calls)
        self._send(data)

    def _send(self, data: bytes) -> None:
        self.busy = False
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if self.buffer:
            self._next()

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def serve_fast(options: Options, sim: SimState | None = None) -> tuple[asyncio.Server, int]:
    """Listen on `options.host:options.port` (0 = any free port); returns (server, port)."""
    if any(rate > 0 for rate in options.fault_rates().values()):
        raise ValueError("mock-upstream --fast injects no faults; drop the --fault-* flags")
    sim = sim or SimState(options)
    holder: dict[str, str] = {}
    server = await asyncio.get_running_loop().create_server(
        lambda: _Connection(sim, holder["base"]), options.host, options.port
    )
    port = server.sockets[0].getsockname()[1]
    host = f"[{options.host}]" if ":" in options.host else options.host
    holder["base"] = f"http://{host}:{port}"
    return server, port
