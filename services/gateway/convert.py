"""Batch API input files → gpt4batch asks: every line checked once, at `validating`.

Input, one request per line (the Batch API's shape):

    {"custom_id": "r1", "method": "POST", "url": "/v1/responses",
     "body": {"model": "gpt-4o-mini", "input": "Hi"}}

becomes one `AskMessage` whose record id is the `custom_id` and whose `request`
carries the endpoint and the body whole, to be sent as they are (a chat-only
upstream's caller turns a chat body into an ask: common/chat_request.py, and
the lines are checked for that here when such a caller serves the fleet). A
file of gpt4batch records (`{"id", "asks"}`) is accepted as well, detected by
the shape of its first line, and checked by ingest's own validator. Any bad
line fails the whole batch at `validating`, with the line numbers, as the real
API does; an endpoint the fleet does not serve fails it with one error.

A gpt4batch record's images and files may only name files the same key
uploaded to the gateway, by file id (`"files": ["file-…"]`): a host path is
refused without being looked at, and no error names a path on the host.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pydantic_core

from gpt4batch.common.chat_request import ASK_ID, chat_ask, chat_messages, model_of
from gpt4batch.common.chat_request import BadRequestLine as _Bad
from gpt4batch.common.endpoints import CHAT, COMPLETIONS, EMBEDDINGS
from gpt4batch.common.messages import Ask, AskMessage, EndpointRequest, Record
from gpt4batch.services.gateway.serving import Serving
from gpt4batch.services.ingest.reader import RawLine, read_lines
from gpt4batch.services.ingest.validate import Accepted, RejectKind, Validator, json_type

MAX_REPORTED_ERRORS = 100
#: What a Batch API line's body must hold besides `model`, by endpoint.
REQUIRED = {CHAT: "messages", COMPLETIONS: "prompt", EMBEDDINGS: "input"}

Format = Literal["openai", "gpt4batch"]


@dataclass
class Conversion:
    """The result of checking one input file."""

    format: Format = "openai"
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def error(self, line: int | None, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


def detect_format(obj: Any) -> Format:
    """gpt4batch records have `asks`; everything else is read as Batch API requests."""
    if isinstance(obj, dict) and "asks" in obj and "custom_id" not in obj:
        return "gpt4batch"
    return "openai"


def convert_file(
    source: Path,
    asks_out: BinaryIO,
    *,
    owned_files: frozenset[str],
    batch: str,
    endpoint: str,
    max_line_bytes: int,
    max_msg_size: int,
    serving: Serving | None = None,
) -> Conversion:
    """Check every line of `source` and write one AskMessage JSON line per request to
    `asks_out` (meaningless when the result has errors: the batch fails). `source` is in
    the gateway's files folder, next to the `owned_files` its records may name; `serving`
    is what the fleet's callers serve (None: not known)."""
    serving = serving or Serving(None)
    result = Conversion()
    try:
        opened = source.open("rb", buffering=1 << 20)
    except FileNotFoundError:  # deleted, or expired (file_expiry.py), before it was read
        gone = "The input file was deleted before the batch was validated."
        result.error(None, "file_not_found", gone, "input_file_id")
        return result
    with opened as stream:
        lines = read_lines(stream, max_line_bytes)
        first = next(lines, None)
        if first is None:
            result.error(1, "empty_file", "The input file has no requests.")
            return result
        try:
            head = pydantic_core.from_json(first.data or b"null", allow_inf_nan=False)
        except ValueError:
            head = None
        result.format = detect_format(head)
        refusal = serving.refusal(endpoint) if result.format == "openai" else None
        if result.format == "gpt4batch" and endpoint != CHAT:
            refusal = f"A file of gpt4batch records runs as {CHAT}, not {endpoint}."
        if refusal is not None:
            result.error(None, "unsupported_endpoint", refusal, "endpoint")
            return result
        convert = (
            _GptLines(source, owned_files)
            if result.format == "gpt4batch"
            else _OpenAILines(endpoint, serving.converts_chat)
        )
        for line in _chain(first, lines):
            try:
                message = convert.message(line, batch, result.total)
            except _Bad as bad:
                result.error(line.number, bad.code, bad.message, bad.param)
                continue
            data = message.model_dump_json(exclude_none=True).encode()
            if len(data) > max_msg_size:
                result.error(
                    line.number,
                    "request_too_large",
                    f"This request is {len(data)} bytes as a message, over the "
                    f"{max_msg_size}-byte limit (--max-msg-size).",
                )
                continue
            result.total += 1
            if not result.error_count:
                asks_out.write(data + b"\n")
    return result


def _chain(first: RawLine, rest: Iterator[RawLine]) -> Iterator[RawLine]:
    yield first
    yield from rest


class _OpenAILines:
    """Batch API request lines for `endpoint`; `converts_chat`: chat bodies must also fit
    a chat-only upstream's ask (a caller of such a kind serves the fleet)."""

    def __init__(self, endpoint: str, converts_chat: bool = False) -> None:
        self.endpoint = endpoint
        self.converts_chat = converts_chat
        self.seen: dict[str, int] = {}

    def message(self, line: RawLine, batch: str, seq: int) -> AskMessage:
        if line.data is None:
            raise _Bad("line_too_long", f"This line is {line.size} bytes, over the limit.")
        try:
            obj = pydantic_core.from_json(line.data, allow_inf_nan=False)
        except ValueError:
            raise _Bad("invalid_json_line", "This line is not parseable as valid JSON.") from None
        if not isinstance(obj, dict):
            raise _Bad("invalid_json_line", f"Expected a JSON object, got {json_type(obj)}.")
        for name in ("custom_id", "method", "url", "body"):
            if name not in obj:
                raise _Bad(
                    "missing_required_parameter", f"Missing required parameter: '{name}'.", name
                )
        custom_id = obj["custom_id"]
        if not isinstance(custom_id, str) or not custom_id:
            raise _Bad("invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
        if obj["method"] != "POST":
            raise _Bad("invalid_method", "Only the POST method is supported.", "method")
        if obj["url"] != self.endpoint:
            raise _Bad(
                "mismatched_endpoint",
                f"The url {obj['url']!r} does not match the batch endpoint {self.endpoint!r}.",
                "url",
            )
        first = self.seen.setdefault(custom_id, line.number)
        if first != line.number:
            raise _Bad(
                "duplicate_custom_id",
                f"The custom_id {custom_id!r} is already used on line {first}.",
                "custom_id",
            )
        body = obj["body"]
        if not isinstance(body, dict):
            raise _Bad("invalid_body", "body must be a JSON object.", "body")
        self._check_body(body)
        return AskMessage(
            batch=batch,
            seq=seq,
            record=Record(id=custom_id, asks=[Ask(id=ASK_ID, content="")]),
            request=EndpointRequest(endpoint=self.endpoint, body=body),
        )

    def _check_body(self, body: dict[str, Any]) -> None:
        """What every upstream needs of the body; the rest is the upstream's to judge."""
        model_of(body)
        if self.endpoint == CHAT:
            if self.converts_chat:
                chat_ask(body)
            else:
                chat_messages(body)
            return
        required = REQUIRED.get(self.endpoint)
        if required is not None and body.get(required) is None:
            raise _Bad(
                "missing_required_parameter",
                f"Missing required parameter: '{required}'.",
                f"body.{required}",
            )
        if body.get("stream") is True:
            raise _Bad(
                "invalid_value",
                f"'stream': true is not supported in a batch for {self.endpoint}: each "
                "request gets one answer object.",
                "body.stream",
            )


#: The one answer to a path that is not a file of this key: the same whether or not
#: anything exists there, and naming nothing on the host.
NOT_AN_UPLOAD = (
    "must name a file you uploaded to this gateway, by its id (e.g. 'file-…'); "
    "paths on the gateway's host are not accepted"
)


class _GptLines:
    """gpt4batch records, checked as `gpt4batch ingest` checks them, except that what an
    ask references must be one of `owned` (file ids) in the files folder."""

    def __init__(self, source: Path, owned: frozenset[str]) -> None:
        self.files_dir = str(source.parent)
        self.owned = owned
        self.validator = Validator(source=source.name, base_dir=source.parent, stat=self._stat)

    def _stat(self, path: str) -> os.stat_result:
        folder, name = os.path.split(path)
        if folder != self.files_dir or name not in self.owned:
            raise FileNotFoundError(name)  # never stat a host path
        return os.stat(path)

    def message(self, line: RawLine, batch: str, seq: int) -> AskMessage:
        verdict = self.validator.check(line)
        if not isinstance(verdict, Accepted):
            reject = verdict.reject
            reason = reject.reason
            if verdict.kind == RejectKind.MISSING_FILE:
                reason = NOT_AN_UPLOAD
            elif verdict.kind == RejectKind.FILE_TOO_LARGE:
                reason = "the file is over the size limit of a referenced file"
            raise _Bad(verdict.kind.value, reason, reject.field)
        return AskMessage(batch=batch, seq=seq, record=verdict.record, base_dir=self.files_dir)
