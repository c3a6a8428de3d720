"""The OpenAI kinds' model calls: `/v1/chat/completions` (and go-gpt-server's `/chat`)
and `/v1/completions`, which take tokens per key (tpm.py) and report `usage`.

A call's tokens are known before it is answered (the answer is made from the
request), so `--tpm` refuses a call at arrival, as OpenAI does, with its headers.
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
    """A model call: its (prompt, answer) tokens are counted for its key before it runs."""

    _body: dict[str, Any] | None = None
    _reply: tuple[str, int] = ("", 0)

    def model_tokens(self) -> tuple[int, int] | None:
        """(prompt, answer) tokens; None for a body `post` refuses with 400."""
        raise NotImplementedError

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
    if isinstance(most, int) and not isinstance(most, bool) and most > 0:
        while text_tokens(text) > most:
            text = text[: most * 4 if text.isascii() else most]
    return text, text_tokens(text)


class OpenAIChatHandler(TokenCharged):
    """`/v1/chat/completions` and go-gpt-server's `/chat`: JSON or SSE (`stream: true`)."""

    endpoint = "chat.completions"

    def streams(self) -> bool:
        return bool(self._body and self._body.get("stream"))

    def model_tokens(self) -> tuple[int, int] | None:
        body = self.parsed_body()
        if body is None:
            return None  # answered 400 by `post`
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None
        self._body = body
        text, images = last_user_text(messages)
        reply = f"Mock answer to: {text[:200]} (images={images}, turns={len(messages)})"
        self._reply = _answer_text(self.sim, reply, body)
        return estimate_prompt_tokens(body), self._reply[1]

    def post(self) -> None:
        body = self._body
        if body is None:
            body = self.body_json()
            if body is None:
                return
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            self.send_json(400, {"error": {"message": "`messages` is required", "type": "invalid"}})
            return
        reply, tokens = self._reply
        model = str(body.get("model") or "gpt-3.5-turbo")
        completion_id = "chatcmpl-" + self.sim.short_id(24)
        if not body.get("stream"):
            prompt = estimate_prompt_tokens(body)
            answer = shapes.completion(completion_id, model, reply, prompt, tokens)
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
            out.append(b"data: [DONE]\n\n")
        self.finish(b"".join(out))


class CompletionsHandler(TokenCharged):
    endpoint = "completions"

    def model_tokens(self) -> tuple[int, int] | None:
        body = self.parsed_body()
        if body is None or not body.get("prompt"):
            return None  # answered 400 by `post`
        self._body = body
        text = f"Mock completion of: {str(body['prompt'])[:200]}{body.get('suffix') or ''}"
        self._reply = _answer_text(self.sim, text, body)
        return estimate_prompt_tokens(body), self._reply[1]

    def post(self) -> None:
        body = self._body
        if body is None:
            body = self.body_json()
            if body is None:
                return
            self.send_json(400, {"error": {"message": "`prompt` is required", "type": "invalid"}})
            return
        text, tokens = self._reply
        model = str(body.get("model") or "text-davinci-003")
        prompt = estimate_prompt_tokens(body)
        answer_id = "cmpl-" + self.sim.short_id(24)
        answer = shapes.completion(answer_id, model, text, prompt, tokens, chat=False)
        self.send_json(200, answer)
