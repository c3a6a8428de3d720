"""gpt4batch results → Batch API output lines (the output and error files' lines).

    {"id": "batch_req_…", "custom_id": "r1",
     "response": {"status_code": 200, "request_id": "req_…", "body": <the answer>},
     "error": null}

A request the upstream refused carries its HTTP status and `body.error`; one
that failed on our side (a timeout, a dead letter) has `response: null` and
`error: {code, message}` with our code's name (docs/errors.md).
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from gpt4batch.common.answer_text import gpt4api_text
from gpt4batch.common.endpoints import CHAT
from gpt4batch.common.errors import IErrCode
from gpt4batch.common.received_answer import received_json


def request_id(batch: str, custom_id: str) -> str:
    return "req_" + hashlib.sha1(f"{batch}\x00{custom_id}".encode()).hexdigest()[:24]


def output_line(
    batch: str, record: dict[str, Any], endpoint: str = CHAT
) -> tuple[dict[str, Any], bool]:
    """A ledger line (a gpt4batch record) as a Batch API output line; True if it succeeded.

    The body of a success is the upstream's answer as it came (`Response`,
    `CreateEmbeddingResponse`, `Completion`, `ChatCompletion`); a chat-only upstream's
    answer to a chat line is rebuilt as a `chat.completion` around its text."""
    custom_id = str(record.get("id"))
    rid = request_id(batch, custom_id)
    line_id = "batch_req_" + rid[4:]
    ierr = record.get("iErr")
    answers = record.get("answers") or []
    if ierr is None and answers:
        answer = answers[-1]
        text = received_json(answer)
        if text is not None:  # (output_json writes it as received)
            body = json.loads(text)
        else:
            body = chat_completion(answer) if endpoint == CHAT else answer
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


def output_json(batch: str, record: dict[str, Any], endpoint: str = CHAT) -> tuple[bytes, bool]:
    """`output_line` as one line of JSON (no newline); a success's body is written as the
    text the upstream sent (common/received_answer.py), not written again."""
    answers = record.get("answers") or []
    text = received_json(answers[-1]) if record.get("iErr") is None and answers else None
    if text is None:
        line, good = output_line(batch, record, endpoint)
        return json.dumps(line, ensure_ascii=False).encode(), good
    custom_id = str(record.get("id"))
    rid = request_id(batch, custom_id)
    head = json.dumps({"id": "batch_req_" + rid[4:], "custom_id": custom_id}, ensure_ascii=False)
    response = f'{{"status_code": 200, "request_id": "{rid}", "body": {text}}}'
    return f'{head[:-1]}, "response": {response}, "error": null}}'.encode(), True


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
