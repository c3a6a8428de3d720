"""Tornado handlers: one class per upstream endpoint, sharing the guard in `prepare`.

`prepare` counts the call, checks the token, applies the QPS limit and (model
calls of the OpenAI kinds, openai_handlers.py) the per-key token limit, picks an injected
fault (by rate, or the `X-Mock-Fault` header) and sleeps the latency; the
endpoint methods then only build the answer.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import math
from collections.abc import Awaitable
from typing import Any

from tornado import httputil
from tornado.web import RequestHandler, stream_request_body

from gpt4batch.common.imagesize import image_size
from gpt4batch.services.mock_upstream import shapes
from gpt4batch.services.mock_upstream.keys import key_id
from gpt4batch.services.mock_upstream.options import FAULT_KINDS
from gpt4batch.services.mock_upstream.state import Conversation, SimState, now

MAX_UPLOAD_BYTES = 100 * 1024 * 1024
_MULTIPART_SLACK = 1024 * 1024
MAX_CONVERSATIONS = 1_000_000


def dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


class Base(RequestHandler):
    """Common guard and JSON helpers; `endpoint` names the call in /stats."""

    endpoint = "?"
    needs_token = True
    key = ""  # key id of the call's token (keys.py), once checked
    _keyed = False  # counted under `key` (accepted): its in-flight count ends with the call
    #: API calls: subject to --qps and counted in max_calls_in_1s (downloads and console not).
    api_call = True
    sim: SimState

    def initialize(self, sim: SimState) -> None:
        self.sim = sim
        self.fault: str | None = None
        self._live = False
        self._closed: asyncio.Event | None = None

    def compute_etag(self) -> None:
        return None

    def send_json(self, status: int, value: Any) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.finish(dumps(value))

    def body_json(self) -> dict[str, Any] | None:
        """The request body as a JSON object, or None after answering 400."""
        try:
            body = json.loads(self.request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.send_json(400, {"detail": "body must be a JSON object"})
            return None
        return body

    def _done(self) -> None:
        if self._live:
            self._live = False
            self.sim.stats.in_flight -= 1
            if self._keyed:
                self.sim.keys.answered(self.key, self.sim.stats.key_calls)

    def on_finish(self) -> None:
        self._done()

    def on_connection_close(self) -> None:
        if self._closed is not None:
            self._closed.set()
        self._done()

    def authorized(self, t: float) -> bool:
        """Whether the call's Bearer token is one of the keys, not refused (counted per key)."""
        value = self.request.headers.get("Authorization", "")
        token = value[7:] if value[:7].lower() == "bearer " else value
        self.key = key_id(token.strip())
        self._keyed = self.sim.accepts(token.strip(), t, window=self.api_call)
        return self._keyed

    def charge_tokens(self, t: float) -> bool:
        """Count the call's tokens (OpenAI model calls: openai_handlers.py); False after 429."""
        return True

    def prepare(self) -> Awaitable[None] | None:
        """Synchronous on the fast path: tornado awaits only a returned coroutine."""
        sim = self.sim
        stats = sim.stats
        t = now()
        stats.started(self.endpoint, t, window=self.api_call)
        self._live = True
        if self.needs_token and not self.authorized(t):
            stats.unauthorized += 1
            self.send_json(401, {"detail": "invalid or missing access token"})
            return None
        wait = sim.over_qps(t) if self.api_call else None
        if wait is not None:
            stats.rate_limited += 1
            self.set_header("Retry-After", str(max(1, math.ceil(wait))))
            self.send_json(429, {"detail": "too many requests"})
            return None
        if self.api_call and not self.charge_tokens(t):
            return None
        fault = self._requested_fault() or sim.pick_fault()
        if fault is not None:
            stats.faults[fault] += 1
            stats.faulted_calls[self.endpoint] += 1
            self.fault = fault
            if fault == "hang":
                return self._hang()
            if self._apply_fault(fault):
                return None
        delay = sim.delay()
        return self._sleep(delay) if delay > 0 else None

    async def _sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._client_gone():
            self._abandon()

    async def _hang(self) -> None:
        """Stall until the client gives up (then do nothing) or `--hang-seconds` pass (504)."""
        self._closed = asyncio.Event()
        try:
            await asyncio.wait_for(self._closed.wait(), self.sim.options.hang_seconds)
            self._abandon()
        except TimeoutError:
            self.send_json(504, {"detail": "mock fault: hung"})

    def _client_gone(self) -> bool:
        stream = getattr(self.request.connection, "stream", None)
        return stream is None or stream.closed()

    def _abandon(self) -> None:
        """The client hung up: skip the endpoint method so the call has no effect."""
        self._done()
        self._finished = True  # tornado then neither runs the method nor writes

    def _requested_fault(self) -> str | None:
        if not self.sim.options.fault_header:
            return None
        wanted = self.request.headers.get("X-Mock-Fault")
        return wanted if wanted in FAULT_KINDS else None

    def _apply_fault(self, fault: str) -> bool:
        """Answer (or not) according to `fault`; True if the request is over."""
        if fault == "5xx":
            self.send_json(503, {"detail": "mock fault: service unavailable"})
        elif fault == "drop":
            self.request.connection.stream.close()  # type: ignore[union-attr]
            self._abandon()
        elif fault == "bad-json" or (fault == "truncate" and not self.streams()):
            self.set_header("Content-Type", "application/json")
            self.finish(b'{"created": 1708834483, "message_id": "7da0')
        else:
            return False
        return True

    def streams(self) -> bool:
        """Whether this request is answered with SSE (a `truncate` fault then cuts the stream)."""
        return False


class StatsHandler(Base):
    endpoint = "stats"
    needs_token = False

    def prepare(self) -> None:
        return None

    def get(self) -> None:
        self.send_json(200, self.sim.stats.as_json())

    def post(self) -> None:
        self.sim.reset()
        self.send_json(200, {"reset": True})


class KeysHandler(Base):
    """`POST /keys/refuse|accept` `{"key": id}`: refuse a key with 401, or accept it again."""

    endpoint = "keys"
    needs_token = False

    def prepare(self) -> None:
        return None

    def post(self, action: str) -> None:
        try:
            key = json.loads(self.request.body or b"{}").get("key")
        except (ValueError, AttributeError):
            key = None
        if not isinstance(key, str) or not self.sim.keys.set_refused(key, action == "refuse"):
            self.send_json(404, {"detail": "no such key id (see /stats key_calls)"})
            return
        self.send_json(200, {"key": key, "refused": action == "refuse"})


class FilesHandler(Base):
    """Downloads advertised in `downloads`; like signed blob URLs, no token needed."""

    endpoint = "files"
    needs_token = False
    api_call = False

    def get(self, file_id: str) -> None:
        if not self.get_query_argument("sig", ""):
            self.send_json(403, {"detail": "missing sig"})
            return
        self.set_header("Content-Type", "application/octet-stream")
        self.finish(shapes.file_bytes(file_id))


class ConsoleHandler(Base):
    """`/console/access_token`: email+password → the simulator's token."""

    endpoint = "access_token"
    needs_token = False
    api_call = False

    def post(self) -> None:
        body = self.body_json()
        if body is None:
            return
        o = self.sim.options
        if body.get("email") != o.console_email or body.get("password") != o.console_password:
            self.sim.stats.unauthorized += 1
            self.send_json(401, {"detail": "wrong email or password"})
            return
        ttl = body.get("ttl") or 30 * 86400
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=float(ttl))
        self.send_json(
            200,
            {
                "access_token": o.token,
                "expired_at": expires.isoformat(timespec="seconds"),
                "username": o.console_email,
            },
        )


@stream_request_body
class UploadHandler(Base):
    """`/{tier}/uploaded`: multipart `conversation_id`, `type`, `file`."""

    endpoint = "uploaded"

    async def prepare(self) -> None:
        self._chunks: list[bytes] = []
        length = int(self.request.headers.get("Content-Length") or 0)
        if length > MAX_UPLOAD_BYTES + _MULTIPART_SLACK:
            self.sim.stats.started(self.endpoint, now())
            self._live = True
            self.send_json(413, {"detail": "file is larger than 100M"})
            return
        self.request.connection.set_max_body_size(MAX_UPLOAD_BYTES + _MULTIPART_SLACK)  # type: ignore[union-attr]
        pending = super().prepare()
        if pending is not None:
            await pending

    def data_received(self, chunk: bytes) -> None:
        self._chunks.append(chunk)

    def post(self, tier: str) -> None:
        args: dict[str, list[bytes]] = {}
        files: dict[str, list[httputil.HTTPFile]] = {}
        httputil.parse_body_arguments(
            self.request.headers.get("Content-Type", ""), b"".join(self._chunks), args, files
        )
        self._chunks = []
        uploads = files.get("file")
        upload = uploads[0] if uploads else None
        kind = (args.get("type") or [b""])[0].decode()
        if upload is None or kind not in ("multimodal", "my_files"):
            self.send_json(400, {"detail": "need a `file` and type multimodal|my_files"})
            return
        if len(upload.body) > MAX_UPLOAD_BYTES:
            self.send_json(413, {"detail": "file is larger than 100M"})
            return
        sim = self.sim
        conversation_id = (args.get("conversation_id") or [b""])[0].decode().strip()
        if not conversation_id:
            conversation_id = "internal-" + sim.short_id()
            sim.internal[conversation_id] = None
        elif conversation_id not in sim.internal and conversation_id not in sim.conversations:
            sim.stats.not_found += 1
            self.send_json(404, {"detail": f"conversation {conversation_id} not found"})
            return
        mime = upload.content_type or "application/octet-stream"
        answer: dict[str, Any] = {
            "conversation_id": conversation_id,
            "attachment": None,
            "part": None,
        }
        if kind == "multimodal":
            width, height = image_size(upload.body[:65536])
            answer["part"] = {
                "name": upload.filename,
                "asset_pointer": "file-service://file-" + sim.short_id(24),
                "size_bytes": len(upload.body),
                "width": width,
                "height": height,
                "mimeType": mime,
            }
        else:
            answer["attachment"] = {
                "id": "file-" + sim.short_id(24),
                "name": upload.filename,
                "size": len(upload.body),
                "mimeType": mime,
            }
        self.send_json(200, answer)


class ChatHandler(Base):
    """`/{tier}/all-tools` and `/{tier}/gizmos` with conversation chaining.

    Unknown `conversation_id` → 404. A `parent_message_id` that is not the last
    message of the conversation (or any parent on a new one) → 409, counted in
    `chain_errors`.
    """

    def prepare(self) -> Awaitable[None] | None:
        self.endpoint = self.path_args[1]  # all-tools or gizmos, counted apart
        return super().prepare()

    def post(self, tier: str, kind: str) -> None:
        body = self.body_json()
        if body is None:
            return
        base = f"{self.request.protocol}://{self.request.host}"
        self.send_json(*chat_reply(self.sim, kind, body, base, self.key))


def chat_reply(
    sim: SimState, kind: str, body: dict[str, Any], base: str, key: str = ""
) -> tuple[int, Any]:
    """(status, JSON answer) of an all-tools/gizmos chat; shared with the fast path (fast.py).

    `base` is the simulator's own URL, for the download links it hands out. A
    conversation belongs to the key (`key_id`) that began it: another key's call in
    it is 404, as another account's would be, counted in `foreign_conversation`.
    """
    message = body.get("message")
    if not isinstance(message, str) or not message:
        return 400, {"detail": "`message` is required"}
    if kind == "gizmos" and not body.get("gizmo_id"):
        return 400, {"detail": "`gizmo_id` is required for gizmos"}
    conversation_id = body.get("conversation_id") or None
    conversation = _conversation(sim, conversation_id)
    if conversation is not None and conversation.key is None:
        conversation.key = key
    if conversation is not None and conversation.key != key:
        sim.stats.foreign_conversation += 1
        conversation = None
    if conversation is None:
        sim.stats.not_found += 1
        return 404, {"detail": f"conversation {conversation_id} not found"}
    parent = body.get("parent_message_id") or None
    if parent != conversation.last_message_id:
        sim.stats.chain_errors += 1
        detail = f"parent_message_id {parent} is not the conversation's last message"
        return 409, {"detail": detail}
    message_id = sim.new_id()
    answer = shapes.chat_answer(
        body=body,
        conversation_id=conversation.real_id,
        message_id=message_id,
        user_message_id=sim.new_id(),
        parent_id=parent or sim.new_id(),
        request_id=sim.short_id(16) + "-MCK",
        downloads=_downloads(sim, message, base),
    )
    conversation.last_message_id = message_id
    return 200, answer


def _conversation(sim: SimState, conversation_id: str | None) -> Conversation | None:
    if conversation_id is not None and conversation_id in sim.conversations:
        return sim.conversations[conversation_id]
    if conversation_id is not None and conversation_id not in sim.internal:
        return None
    real = sim.internal.get(conversation_id) if conversation_id else None
    if real is not None:
        return sim.conversations[real]
    conversation = Conversation(real_id=sim.new_id())
    sim.conversations[conversation.real_id] = conversation
    if conversation_id:
        sim.internal[conversation_id] = conversation.real_id
    if len(sim.conversations) > MAX_CONVERSATIONS:
        del sim.conversations[next(iter(sim.conversations))]
    return conversation


def _downloads(sim: SimState, message: str, base: str) -> list[str]:
    if shapes.HOSTILE_TRIGGER in message:
        names = list(shapes.HOSTILE_NAMES)
    elif any(t in message for t in shapes.DRAW_TRIGGERS):
        names = [shapes.HOSTILE_NAMES[0] if sim.options.hostile_names else "image.webp"]
    else:
        return []
    return [
        shapes.download_url(base, "file-" + sim.short_id(24), n, sim.short_id(32)) for n in names
    ]


def last_user_text(messages: list[Any]) -> tuple[str, int]:
    """Text of the last user message and how many images it carries."""
    for m in reversed(messages):
        if isinstance(m, dict) and m.get("role") == "user":
            content = m.get("content")
            if isinstance(content, list):
                texts = [p.get("text", "") for p in content if isinstance(p, dict)]
                images = sum(
                    1 for p in content if isinstance(p, dict) and p.get("type") == "image_url"
                )
                return " ".join(t for t in texts if t), images
            return str(content), 0
    return "", 0


class ModelsHandler(Base):
    endpoint = "models"

    def get(self) -> None:
        self.send_json(200, shapes.models())


class ChatgptServiceHandler(Base):
    """chatgpt-service: `messages` or `query` → `{code, msg, data: {response}}`.

    A message containing `code-error` is answered with code 1001 (HTTP 200).
    """

    endpoint = "chatgpt-service"

    def post(self) -> None:
        body = self.body_json()
        if body is None:
            return
        messages = body.get("messages")
        if isinstance(messages, list) and messages:
            text, _ = last_user_text(messages)
        elif isinstance(body.get("query"), str) and body["query"]:
            text = body["query"]
        else:
            self.send_json(200, {"code": 400, "msg": "messages or query is required", "data": {}})
            return
        if "code-error" in text:
            self.send_json(200, {"code": 1001, "msg": "mock error requested", "data": {}})
            return
        turns = len(messages) if isinstance(messages, list) else 1
        reply = f"Mock answer to: {text[:200]} (turns={turns})"
        self.send_json(200, {"code": 0, "msg": "ok", "data": {"response": reply}})
