"""The OpenAI kinds' model calls: `/v1/chat/completions` (and go-gpt-server's `/chat`),
`/v1/completions`, `/v1/embeddings` and `/v1/responses`, which take tokens per key
(tpm.py) and report `usage` in the real API's shapes (shapes.py).

A call's tokens are known before it is answered (the answer is made from the
request), so `--tpm` refuses a call at arrival, as OpenAI does, with its headers.
A body without what the endpoint needs is answered 400, naming the field.
"""

from __future__ import annotations

import json
import math
from typing import Any

from gpt4batch.common.tokens import estimate_prompt_tokens, text_tokens
from gpt4batch.services.mock_upstream import shapes
from gpt4batch.services.mock_upstream.handlers import Base, dumps, last_user_text
from gpt4batch.services.mock_upstream.state import SimState
from gpt4batch.services.mock_upstream.tpm import KeyTokens, reset_text


class TokenCharged(Base):
    """A model call: its (prompt, answer) tokens are counted for its key before it runs.

    A subclass names the body field it needs (`required`) and makes its answer text
    (`reply`); `post` answers with `answer(body)` once the body is known good."""

    required = ""
    _body: dict[str, Any] | None = None
    _reply: tuple[str, int] = ("", 0)

    def accepts(self, body: dict[str, Any]) -> bool:
        return bool(body.get(self.required))

    def reply(self, body: dict[str, Any]) -> tuple[str, int]:
        """The answer's text and its tokens."""
        raise NotImplementedError

    def answer(self, body: dict[str, Any]) -> None:
        raise NotImplementedError

    def model_tokens(self) -> tuple[int, int] | None:
        """(prompt, answer) tokens; None for a body `post` refuses with 400."""
        body = self.parsed_body()
        if body is None or not self.accepts(body):
            return None
        self._body = body
        self._reply = self.reply(body)
        return estimate_prompt_tokens(body), self._reply[1]

    def post(self) -> None:
        body = self._body
        if body is None and self.model_tokens() is not None:  # (not charged: no --qps path)
            body = self._body
        if body is None:
            if self.body_json() is not None:  # else answered 400 already
                message = f"`{self.required}` is required"
                error = {
                    "message": message,
                    "type": "invalid_request_error",
                    "param": self.required,
                }
                self.send_json(400, {"error": error})
            return
        self.answer(body)

    def charge_tokens(self, t: float) -> bool:
        tokens = self.model_tokens()
        if tokens is None:
            return True
        options, stats = self.sim.options, self.sim.stats
        limit, window = options.tpm, options.tpm_window
        keyed = stats.key_tokens.get(self.key) or stats.key_tokens.setdefault(
            self.key, KeyTokens(window)
        )
        wait = keyed.refusal(tokens[0] + tokens[1], limit, t)
        if wait is None:
            keyed.accept(*tokens, t)
        used = keyed.used
        if limit:
            self.set_header("x-ratelimit-limit-tokens", str(limit))
            self.set_header("x-ratelimit-remaining-tokens", str(max(0, limit - used)))
            reset = wait if wait is not None else keyed.window[-1][0] + window - t
            self.set_header("x-ratelimit-reset-tokens", reset_text(reset))
        if wait is None:
            return True
        keyed.rate_limited += 1
        stats.rate_limited += 1
        self.set_header("Retry-After", str(max(1, math.ceil(wait))))
        message = f"Rate limit reached for tokens per min (TPM): Limit {limit}, Used {used}"
        error = {"message": message, "type": "tokens", "code": "rate_limit_exceeded"}
        self.send_json(429, {"error": error})
        return False

    def parsed_body(self) -> dict[str, Any] | None:
        try:
            body = json.loads(self.request.body or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None
        return body if isinstance(body, dict) else None


def _answer_text(sim: SimState, text: str, body: dict[str, Any]) -> tuple[str, int]:
    """`text` padded to `--answer-tokens` and cut at the body's `max_tokens`; its tokens."""
    want = sim.options.answer_tokens
    if want > 0 and text_tokens(text) < want:
        filler = "lorem ipsum dolor sit amet " * (want // 6 + 1)
        text = f"{text} {filler}"[: len(text) + 4 * (want - text_tokens(text))]
    most = body.get("max_tokens") or body.get("max_completion_tokens")
    if not most:
        most = body.get("max_output_tokens")
    if isinstance(most, int) and not isinstance(most, bool) and most > 0:
        while text_tokens(text) > most:
            text = text[: most * 4 if text.isascii() else most]
    return text, text_tokens(text)


def _usage_details(body: dict[str, Any], prompt: int, tokens: int) -> tuple[int, int]:
    """(cached, reasoning) tokens: a prompt of 1,024 tokens or more has half of it cached
    (in steps of 128, as OpenAI caches); a request asking for reasoning has half of its
    answer's tokens reasoning."""
    cached = prompt // 2 // 128 * 128 if prompt >= 1024 else 0
    reasoning = tokens // 2 if body.get("reasoning") or body.get("reasoning_effort") else 0
    return cached, reasoning


def _choices(body: dict[str, Any]) -> int:
    """The body's `n` (choices to answer), 1 unless it asks for more (at most 16)."""
    n = body.get("n")
    return min(n, 16) if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1


class OpenAIChatHandler(TokenCharged):
    """`/v1/chat/completions` and go-gpt-server's `/chat`: JSON (`n` choices) or SSE
    (`stream: true`)."""

    endpoint = "chat.completions"
    required = "messages"

    def streams(self) -> bool:
        return bool(self._body and self._body.get("stream"))

    def accepts(self, body: dict[str, Any]) -> bool:
        messages = body.get("messages")
        return isinstance(messages, list) and bool(messages)

    def reply(self, body: dict[str, Any]) -> tuple[str, int]:
        messages = body["messages"]
        text, images = last_user_text(messages)
        reply = f"Mock answer to: {text[:200]} (images={images}, turns={len(messages)})"
        return _answer_text(self.sim, reply, body)

    def answer(self, body: dict[str, Any]) -> None:
        reply, tokens = self._reply
        model = str(body.get("model") or "gpt-3.5-turbo")
        completion_id = "chatcmpl-" + self.sim.short_id(24)
        if not body.get("stream"):
            prompt = estimate_prompt_tokens(body)
            n = _choices(body)
            cached, reasoning = _usage_details(body, prompt, tokens * n)
            answer = shapes.completion(
                completion_id, model, reply, prompt, tokens, n=n, cached=cached,
                reasoning=reasoning,
            )  # fmt: skip
            self.send_json(200, answer)
            return
        self.set_header("Content-Type", "text/event-stream")
        self.set_header("Cache-Control", "no-cache")
        third = max(1, len(reply) // 3)
        deltas = [{"role": "assistant", "content": ""}] + [
            {"content": reply[i : i + third]} for i in range(0, len(reply), third)
        ]
        if self.fault == "truncate":
            deltas = deltas[:2]
        out = [
            b"data: " + dumps(shapes.chunk(completion_id, model, d, None)) + b"\n\n" for d in deltas
        ]
        if self.fault != "truncate":
            out.append(b"data: " + dumps(shapes.chunk(completion_id, model, {}, "stop")) + b"\n\n")
            options = body.get("stream_options")
            if isinstance(options, dict) and options.get("include_usage"):
                prompt = estimate_prompt_tokens(body)
                usage = shapes.completion(completion_id, model, reply, prompt, tokens)["usage"]
                last = shapes.chunk(completion_id, model, {}, None)
                last.update(choices=[], usage=usage)  # the API's usage chunk: no choices
                out.append(b"data: " + dumps(last) + b"\n\n")
            out.append(b"data: [DONE]\n\n")
        self.finish(b"".join(out))


class CompletionsHandler(TokenCharged):
    """`/v1/completions`: a `text_completion`."""

    endpoint = "completions"
    required = "prompt"

    def reply(self, body: dict[str, Any]) -> tuple[str, int]:
        text = f"Mock completion of: {str(body['prompt'])[:200]}{body.get('suffix') or ''}"
        return _answer_text(self.sim, text, body)

    def answer(self, body: dict[str, Any]) -> None:
        text, tokens = self._reply
        model = str(body.get("model") or "text-davinci-003")
        prompt = estimate_prompt_tokens(body)
        answer_id = "cmpl-" + self.sim.short_id(24)
        n = _choices(body)
        cached, reasoning = _usage_details(body, prompt, tokens * n)
        answer = shapes.completion(
            answer_id, model, text, prompt, tokens, chat=False, n=n, cached=cached,
            reasoning=reasoning,
        )  # fmt: skip
        self.send_json(200, answer)


class EmbeddingsHandler(TokenCharged):
    """`/v1/embeddings`: one vector per input (`dimensions` long, default 8; deterministic
    from the text), as floats or `encoding_format: base64`; usage has no completion."""

    endpoint = "embeddings"
    required = "input"

    def reply(self, body: dict[str, Any]) -> tuple[str, int]:
        return "", 0

    def answer(self, body: dict[str, Any]) -> None:
        given = body["input"]
        inputs = (
            given
            if isinstance(given, list) and given and not isinstance(given[0], int)
            else [given]
        )
        dimensions = body.get("dimensions")
        size = dimensions if isinstance(dimensions, int) and 0 < dimensions <= 4096 else 8
        model = str(body.get("model") or "text-embedding-3-small")
        answer = shapes.embeddings(
            [str(x) for x in inputs], model, size, estimate_prompt_tokens(body),
            base64=body.get("encoding_format") == "base64",
        )  # fmt: skip
        self.send_json(200, answer)


class ResponsesHandler(TokenCharged):
    """`/v1/responses`: a completed `response` with one output message (a reasoning item
    first when the request asks for reasoning, whose tokens are part of the output's)."""

    endpoint = "responses"
    required = "input"

    def reply(self, body: dict[str, Any]) -> tuple[str, int]:
        given = body["input"]
        if isinstance(given, list):
            text, _ = last_user_text(given)
        else:
            text = str(given)
        return _answer_text(self.sim, f"Mock response to: {text[:200]}", body)

    def answer(self, body: dict[str, Any]) -> None:
        text, tokens = self._reply
        prompt = estimate_prompt_tokens(body)
        cached, reasoning = _usage_details(body, prompt, tokens)
        answer = shapes.response(
            "resp_" + self.sim.short_id(40), "msg_" + self.sim.short_id(40), body, text,
            prompt, tokens, cached=cached, reasoning=reasoning,
        )  # fmt: skip
        self.send_json(200, answer)
