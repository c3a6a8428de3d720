"""The conversation runner under a budget (issue 21, `--budget-usd`), without NSQ: a
conversation starts only when its estimated cost fits beside what is spent and reserved;
once one does not fit none starts again; the overshoot is at most the conversations in
flight beyond their estimates; each answer's usage is counted (reported or estimated)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.messages import Ask, AskMessage
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.common.usage import Prices
from gpt4batch.services.caller.budget import Budget, batch_budget
from gpt4batch.services.caller.conversation import ConversationRunner


class Upstream:
    """Answers after `latency` s; reports usage unless `reports` is False."""

    def __init__(self, kind: str = "openai", latency: float = 0.0, reports: bool = True):
        self.kind = kind
        self.latency = latency
        self.reports = reports
        self.calls = 0
        self.running = 0
        self.most_running = 0

    async def run_ask(
        self, state: ConversationState, ask: Ask, **_: Any
    ) -> tuple[dict[str, Any], ConversationState]:
        self.calls += 1
        self.running += 1
        self.most_running = max(self.most_running, self.running)
        await asyncio.sleep(self.latency)
        self.running -= 1
        answer: dict[str, Any] = {"choices": [{"message": {"content": "twelve chars"}}]}
        if self.reports:
            answer["usage"] = {"prompt_tokens": 40, "completion_tokens": 10, "total_tokens": 50}
        return answer, state


def message(seq: int, asks: int = 1, batch: str = "b1") -> AskMessage:
    record = {"id": f"r{seq}", "asks": [{"id": f"a{k}", "content": "q" * 8} for k in range(asks)]}
    return AskMessage.model_validate({"batch": batch, "seq": seq, "record": record})


def runner(upstream: Upstream, budget: Budget | None, prices: Prices) -> ConversationRunner:
    return ConversationRunner(
        client_for=lambda kind: upstream,
        default_kind=upstream.kind,
        policy=RetryPolicy(),
        prices=prices,
        budget=budget,
        completion_estimate=10,
    )


def test_no_conversation_starts_once_the_budget_would_be_passed() -> None:
    upstream = Upstream(latency=0.02)
    budget = Budget(3.0, batch="b1")
    run = runner(upstream, budget, Prices(usd_per_call=1.0))

    async def all_at_once() -> list[Any]:
        return await asyncio.gather(*(run.run(message(i)) for i in range(8)))

    outcomes = asyncio.run(all_at_once())
    assert upstream.calls == 3  # 3 reserved $1 each while in flight: the 4th would pass $3
    refused = [o for o in outcomes if not o.ok]
    assert len(refused) == 5 and {o.error.code for o in refused if o.error} == {402}
    assert all(o.usage.calls == 0 for o in refused)
    assert budget.spent_usd == 3.0 and budget.reserved_usd == 0.0 and budget.reached


def test_once_reached_a_cheaper_conversation_does_not_start_either() -> None:
    upstream = Upstream()
    budget = Budget(2.5, batch="b1")
    run = runner(upstream, budget, Prices(usd_per_call=1.0))
    first = asyncio.run(run.run(message(0, asks=2)))  # $2
    second = asyncio.run(run.run(message(1, asks=1)))  # $3 would pass $2.5
    third = asyncio.run(run.run(message(2, asks=1)))
    assert first.ok and not second.ok and not third.ok
    assert upstream.calls == 2


def test_the_budget_holds_only_its_batch() -> None:
    upstream = Upstream()
    run = runner(upstream, Budget(1.0, batch="b1"), Prices(usd_per_call=1.0))
    outcomes = [asyncio.run(run.run(message(i, batch="other"))) for i in range(3)]
    assert all(o.ok for o in outcomes) and upstream.calls == 3


def test_usage_is_reported_or_estimated_and_priced() -> None:
    prices = Prices(input_usd_per_1m=1e6, output_usd_per_1m=2e6, usd_per_call=0.5)
    reported = asyncio.run(runner(Upstream(), None, prices).run(message(0, asks=2))).usage
    assert (reported.prompt_tokens, reported.completion_tokens, reported.calls) == (80, 20, 2)
    assert reported.estimated is False and reported.cost_usd == 80 + 40 + 1.0
    guessed = asyncio.run(runner(Upstream(reports=False), None, prices).run(message(0))).usage
    assert guessed.estimated is True
    assert guessed.completion_tokens == 3  # "twelve chars": 12 ASCII characters / 4
    assert guessed.prompt_tokens == 2 + 3 + 3  # 8 characters, the message, the reply


def test_a_budget_without_prices_is_a_usage_error() -> None:
    with pytest.raises(ConfigError, match="--budget-usd needs prices"):
        batch_budget(5.0, Prices(), "b1")
    assert batch_budget(None, Prices(), "b1") is None
