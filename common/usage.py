"""What a record's calls used and cost: tokens per answer, priced, summed (issue 21).

Each output line gets a top-level `usage`

    {"prompt_tokens": 812, "completion_tokens": 95, "total_tokens": 907,
     "estimated": false, "cost_usd": 0.003}

summed over the record's answered asks. Tokens are the ones the upstream reported
(`usage` in an OpenAI answer); where it reported none (gpt4api.plus, a stream without
usage) they are estimated by common/tokens.py's rule — the prompt from what was sent,
the completion from the answer's text — and `estimated` is true. The cost is priced
with `Prices` (USD per million input and output tokens plus USD per call: gpt4api.plus
bills calls); without prices every cost is 0.

`UsageTotals` sums usages (a batch ledger, a run's summary, the gateway's batch).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from gpt4batch.common.messages import Ask, UsageLine
from gpt4batch.common.tokens import (
    PER_MESSAGE,
    UNKNOWN_IMAGE_SIZE,
    estimate_completion_tokens,
    estimate_prompt_tokens,
    image_tokens,
    reported_details,
    reported_usage,
    text_tokens,
)

#: The account label of the metrics without an accounts file.
DEFAULT_ACCOUNT = "default"


@dataclass(frozen=True)
class Prices:
    """USD per million prompt (input) tokens, per million completion (output) tokens and
    per call; all 0 (the default) prices everything at 0."""

    input_usd_per_1m: float = 0.0
    output_usd_per_1m: float = 0.0
    usd_per_call: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int, calls: int) -> float:
        return (
            prompt_tokens * self.input_usd_per_1m / 1e6
            + completion_tokens * self.output_usd_per_1m / 1e6
            + calls * self.usd_per_call
        )

    @property
    def free(self) -> bool:
        return not (self.input_usd_per_1m or self.output_usd_per_1m or self.usd_per_call)


@dataclass
class Usage:
    """Tokens and calls of one record's answers (or any sum of them), and their cost."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    estimated: bool = False
    cost_usd: float = 0.0
    #: Of the prompt tokens, those the upstream reported as cached; of the completion
    #: tokens, those it reported as reasoning (0 where it reported none).
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(
        self,
        prompt: int,
        completion: int,
        *,
        estimated: bool,
        prices: Prices,
        answer: Mapping[str, Any] | None = None,
    ) -> None:
        """One answered call's tokens (and the cached/reasoning details of its `answer`)."""
        self.prompt_tokens += prompt
        self.completion_tokens += completion
        self.calls += 1
        self.estimated = self.estimated or estimated
        self.cost_usd += prices.cost(prompt, completion, 1)
        if answer is not None:
            cached, reasoning = reported_details(answer)
            self.cached_tokens += cached
            self.reasoning_tokens += reasoning

    def as_line(self) -> dict[str, Any]:
        """The output line's `usage` object (the details only where some were reported)."""
        line: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "estimated": self.estimated,
            "cost_usd": round(self.cost_usd, 9),
        }
        return _with_details(line, self.cached_tokens, self.reasoning_tokens)


def _with_details(usage: dict[str, Any], cached: int, reasoning: int) -> dict[str, Any]:
    if cached:
        usage["cached_tokens"] = cached
    if reasoning:
        usage["reasoning_tokens"] = reasoning
    return usage


def read_usage(value: Any) -> Usage | None:
    """A `usage` object as written by `Usage.as_line` (None when it is not one)."""
    if not isinstance(value, Mapping):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    cost = value.get("cost_usd")
    if not (isinstance(prompt, int) and isinstance(completion, int)):
        return None
    cached, reasoning = value.get("cached_tokens", 0), value.get("reasoning_tokens", 0)
    return Usage(
        prompt,
        completion,
        estimated=value.get("estimated") is True,
        cost_usd=float(cost) if isinstance(cost, int | float) else 0.0,
        cached_tokens=cached if isinstance(cached, int) else 0,
        reasoning_tokens=reasoning if isinstance(reasoning, int) else 0,
    )


def usage_of(line: UsageLine) -> Usage:
    """A result's `UsageLine` (common/messages/results.py) as a `Usage`, with the cached/reasoning
    details it carries as extra fields."""
    extra = line.model_extra or {}
    cached, reasoning = extra.get("cached_tokens", 0), extra.get("reasoning_tokens", 0)
    return Usage(
        line.prompt_tokens,
        line.completion_tokens,
        estimated=line.estimated,
        cost_usd=line.cost_usd,
        cached_tokens=cached if isinstance(cached, int) and cached > 0 else 0,
        reasoning_tokens=reasoning if isinstance(reasoning, int) and reasoning > 0 else 0,
    )


@dataclass
class UsageTotals:
    """Usage summed over records: what a batch (or a run) used and cost."""

    records: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    estimated_records: int = 0
    cost_usd: float = 0.0
    cached_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, usage: Usage) -> None:
        self.records += 1
        self.prompt_tokens += usage.prompt_tokens
        self.completion_tokens += usage.completion_tokens
        self.estimated_records += usage.estimated
        self.cost_usd += usage.cost_usd
        self.cached_tokens += usage.cached_tokens
        self.reasoning_tokens += usage.reasoning_tokens

    def as_dict(self) -> dict[str, Any]:
        """The totals as the ledger, the manifest, the `.done` marker and the gateway say them
        (the cached/reasoning details only where some were reported)."""
        totals = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "estimated": self.estimated_records > 0,
            "cost_usd": round(self.cost_usd, 9),
            "records": self.records,
        }
        return _with_details(totals, self.cached_tokens, self.reasoning_tokens)

    def summary(self) -> str:
        """`12,345 tokens (10,000 prompt + 2,345 completion, estimated), $0.1234`."""
        note = ", estimated" if self.estimated_records else ""
        return (
            f"{self.total_tokens:,} tokens ({self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion{note}), ${self.cost_usd:,.4f}"
        )


def answer_text(answer: Mapping[str, Any]) -> str:
    """The text an answer carries: gpt4api's `contents[].message.content.parts`, OpenAI's
    `choices[].message.content` / `text`, chatgpt-service's `data.response`."""
    texts: list[str] = []
    for item in answer.get("contents") or ():
        # A ChatGPT-web message, bare or as `{"message": {...}}`; the user's own is no answer.
        message = item.get("message", item) if isinstance(item, Mapping) else None
        if not isinstance(message, Mapping):
            continue
        author, content = message.get("author"), message.get("content")
        if isinstance(author, Mapping) and author.get("role") == "user":
            continue
        parts = content.get("parts") if isinstance(content, Mapping) else None
        texts += [part for part in parts or () if isinstance(part, str)]
    for choice in answer.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        text = message.get("content") if isinstance(message, Mapping) else choice.get("text")
        if isinstance(text, str):
            texts.append(text)
    data = answer.get("data")
    if isinstance(data, Mapping) and isinstance(data.get("response"), str):
        texts.append(data["response"])
    return "\n".join(texts)


def ask_prompt_tokens(content: str, images: int, history: Iterable[Mapping[str, Any]] = ()) -> int:
    """Estimated prompt of one ask: the messages sent before it (OpenAI kinds resend the
    conversation), its text, and `images` images of unknown size."""
    messages = [*history, {"role": "user", "content": content}]
    return estimate_prompt_tokens(messages) + images * image_tokens(*UNKNOWN_IMAGE_SIZE)


def call_tokens(
    answer: Mapping[str, Any], prompt_estimate: Callable[[], int]
) -> tuple[int, int, bool]:
    """(prompt, completion, estimated) of one answered call: as reported, else
    `prompt_estimate()` and the answer's text counted by the estimator."""
    reported = reported_usage(answer)
    if reported is not None:
        return reported[0], reported[1], False
    return prompt_estimate(), text_tokens(answer_text(answer)), True


def conversation_estimate(
    asks: Iterable[tuple[str, int]],
    *,
    history: Iterable[Mapping[str, Any]] = (),
    body: Mapping[str, Any] | None = None,
    completion_default: int,
    resends_history: bool,
) -> tuple[int, int, int]:
    """(prompt, completion, calls) a conversation is expected to take before it runs:
    `asks` as (text, image count) after `history`; each answer `completion_default` tokens
    unless `body` sets a limit; OpenAI kinds (`resends_history`) send every earlier turn
    again with each ask, the others only the new ask."""
    completion_each = estimate_completion_tokens(body or {}, completion_default)
    earlier = list(history)
    carried = 0  # tokens of the earlier turns a resending kind sends again
    prompt = completion = calls = 0
    for text, images in asks:
        prompt += ask_prompt_tokens(text, images, earlier) + carried
        completion += completion_each
        calls += 1
        if resends_history:
            carried += text_tokens(text) + 2 * PER_MESSAGE + completion_each
        else:
            earlier = []  # the upstream keeps the conversation; only the first ask has it
    return prompt, completion, calls


def batch_api_usage(totals: Mapping[str, Any]) -> dict[str, Any]:
    """A batch's totals (`UsageTotals.as_dict`) as the Batch API's `usage` object (OpenAI's
    field names: the lines' chat `prompt_tokens`/`completion_tokens`, Responses
    `input_tokens`/`output_tokens` and embeddings `prompt_tokens` summed, cached and
    reasoning tokens from their details), with what it cost and whether any of it is
    estimated besides."""
    prompt, completion = (
        int(totals.get("prompt_tokens", 0)),
        int(totals.get("completion_tokens", 0)),
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": int(totals.get("cached_tokens", 0))},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": int(totals.get("reasoning_tokens", 0))},
        "total_tokens": prompt + completion,
        "estimated": bool(totals.get("estimated", False)),
        "cost_usd": float(totals.get("cost_usd", 0.0)),
    }


def asks_estimate(
    asks: Iterable[Ask],
    *,
    kind: str,
    completion_default: int,
    max_tokens: int | None = None,
    history: Iterable[Mapping[str, Any]] = (),
) -> tuple[int, int, int]:
    """`conversation_estimate` of a record's asks as an upstream of `kind` gets them."""
    return conversation_estimate(
        ((ask.content, len(ask.image_paths())) for ask in asks),
        history=history,
        body={"max_tokens": max_tokens} if max_tokens else None,
        completion_default=completion_default,
        resends_history=kind == "openai",
    )
