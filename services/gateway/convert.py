"""Batch API lines ⇄ gpt4batch messages: input validation, asks, output lines.

Input, one request per line (the Batch API's shape):

    {"custom_id": "r1", "method": "POST", "url": "/v1/chat/completions",
     "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}]}}

becomes one `AskMessage`: the record id is the `custom_id`, its one ask is the
last (user) message, earlier messages travel as `history`, `body.model` as the
model override. A file of gpt4batch records (`{"id", "asks"}`) is accepted as
well, detected by the shape of its first line, and checked by ingest's own
validator. Any bad line fails the whole batch at `validating`, with the line
numbers, as the real API does.

A gpt4batch record's images and files may only name files the same key
uploaded to the gateway, by file id (`"files": ["file-…"]`): a host path is
refused without being looked at, and no error names a path on the host.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Literal

import pydantic_core
from pydantic import ValidationError

from gpt4batch.common.answer_text import content_text, gpt4api_text
from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages import Ask, AskMessage, AskOverrides, Record
from gpt4batch.services.ingest.reader import RawLine, read_lines
from gpt4batch.services.ingest.validate import Accepted, RejectKind, Validator, json_type

CHAT_ENDPOINT = "/v1/chat/completions"
SUPPORTED_ENDPOINTS = (CHAT_ENDPOINT,)
MAX_REPORTED_ERRORS = 100
#: Ask id of the one ask a Batch API line becomes (names download files, if any).
ASK_ID = "request"

Format = Literal["openai", "gpt4batch"]


@dataclass
class Conversion:
    """The result of checking one input file."""

    format: Format = "openai"
    total: int = 0
    errors: list[dict[str, Any]] = field(default_factory=list)
    error_count: int = 0

    def error(self, line: int, code: str, message: str, param: str | None = None) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_REPORTED_ERRORS:
            self.errors.append({"code": code, "message": message, "param": param, "line": line})


class _Bad(Exception):
    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


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
) -> Conversion:
    """Check every line of `source` and write one AskMessage JSON line per request to
    `asks_out` (meaningless when the result has errors: the batch fails). `source` is in
    the gateway's files folder, next to the `owned_files` its records may name."""
    result = Conversion()
    with source.open("rb", buffering=1 << 20) as stream:
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
        convert = (
            _GptLines(source, owned_files)
            if result.format == "gpt4batch"
            else _OpenAILines(endpoint)
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
    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
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
        model, ask, history = _chat_request(body)
        return AskMessage(
            batch=batch,
            seq=seq,
            record=Record(id=custom_id, asks=[ask]),
            overrides=_overrides(body, model),
            history=history or None,
        )


#: Body fields passed on to the upstream (the rest of the body is not forwarded).
SAMPLING = ("temperature", "top_p", "max_tokens", "presence_penalty", "frequency_penalty")


def _overrides(body: dict[str, Any], model: str) -> AskOverrides:
    values: dict[str, Any] = {"model": model}
    if body.get("max_completion_tokens") is not None and body.get("max_tokens") is None:
        values["max_tokens"] = body["max_completion_tokens"]
    values.update({k: body[k] for k in SAMPLING if body.get(k) is not None})
    try:
        return AskOverrides(**values)
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]) if err["loc"] else "body"
        raise _Bad("invalid_value", f"Invalid '{name}': {err['msg']}.", f"body.{name}") from None


def _chat_request(body: dict[str, Any]) -> tuple[str, Ask, list[dict[str, Any]]]:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise _Bad(
            "missing_required_parameter", "Missing required parameter: 'model'.", "body.model"
        )
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise _Bad(
            "missing_required_parameter",
            "Missing required parameter: 'messages' (a non-empty array).",
            "body.messages",
        )
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise _Bad("invalid_message", "Each message needs a 'role'.", f"body.messages[{i}]")
    last = messages[-1]
    where = f"body.messages[{len(messages) - 1}]"
    if last["role"] != "user":
        raise _Bad("invalid_message", "The last message must have the role 'user'.", where)
    text = content_text(last.get("content"))
    if text is None:
        raise _Bad(
            "unsupported_content",
            "The last message's content must be a string or text parts.",
            where + ".content",
        )
    return model, Ask(id=ASK_ID, content=text), list(messages[:-1])


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


# --- results → output lines ---------------------------------------------------------


def request_id(batch: str, custom_id: str) -> str:
    return "req_" + hashlib.sha1(f"{batch}\x00{custom_id}".encode()).hexdigest()[:24]


def output_line(batch: str, record: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """A ledger line (a gpt4batch record) as a Batch API output line; True if it succeeded."""
    custom_id = str(record.get("id"))
    rid = request_id(batch, custom_id)
    line_id = "batch_req_" + rid[4:]
    ierr = record.get("iErr")
    answers = record.get("answers") or []
    if ierr is None and answers:
        body = chat_completion(answers[-1])
        response = {"status_code": 200, "request_id": rid, "body": body}
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}, True
    ierr = (
        ierr if isinstance(ierr, dict) else {"code": int(IErrCode.INTERNAL), "message": "no answer"}
    )
    code = ierr.get("code")
    message = str(ierr.get("message", ""))
    ours = _OUR_CODES.get(code) if isinstance(code, int) else "unknown_error"
    if ours is None and isinstance(code, int) and 400 <= code < 600:
        # The upstream answered with this HTTP status: the real API's failed-request shape.
        error = {"message": message, "type": _error_type(code), "param": None, "code": None}
        response = {"status_code": code, "request_id": rid, "body": {"error": error}}
        return {"id": line_id, "custom_id": custom_id, "response": response, "error": None}, False
    failure = {"code": ours or "unknown_error", "message": message}
    return {"id": line_id, "custom_id": custom_id, "response": None, "error": failure}, False


#: iErr codes of gpt4batch's own making (no HTTP answer behind them) → `error.code`.
_OUR_CODES = {int(c): c.name.lower() for c in IErrCode}


def _error_type(status: int) -> str:
    if status == 429:
        return "rate_limit_exceeded"
    if status in (401, 403):
        return "authentication_error"
    return "invalid_request_error" if status < 500 else "server_error"


_ANSWER_ONLY = ("message_id", "downloads", "spec_downloads")


def chat_completion(answer: dict[str, Any]) -> dict[str, Any]:
    """The answer as a `chat.completion` body: OpenAI-style answers as they came,
    gpt4api-style ones (ChatGPT web messages) rebuilt around their text."""
    if isinstance(answer.get("choices"), list):
        return {k: v for k, v in answer.items() if k not in _ANSWER_ONLY}
    text = gpt4api_text(answer)
    return {
        "id": "chatcmpl-" + str(answer.get("message_id") or "")[:40],
        "object": "chat.completion",
        "created": int(answer.get("created") or time.time()),
        "model": str(answer.get("model") or "gpt4api"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": None,
    }
