"""Running one record's conversation: asks in order, chained, retried, downloads planned.

Pure logic over a `ConversationClient`; no NSQ here, so it is tested with the
simulator or a fake client.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import cached_property, partial
from typing import Any

from pydantic import ValidationError

from gpt4batch.common.errors import IErrCode, RetryableError, UpstreamError
from gpt4batch.common.logging import get_logger, redact_text
from gpt4batch.common.messages import Ask, AskMessage, ChatResponse, DownloadJob, IErr, Record
from gpt4batch.common.received_answer import kept
from gpt4batch.common.retry import RetryPolicy, with_retries
from gpt4batch.common.tokens import estimate_prompt_tokens
from gpt4batch.common.upstreams import ConversationClient, ConversationState
from gpt4batch.common.upstreams.base import Answer
from gpt4batch.common.upstreams.errors import bad_response
from gpt4batch.common.usage import (
    DEFAULT_ACCOUNT,
    Prices,
    Usage,
    ask_prompt_tokens,
    asks_estimate,
    call_tokens,
)
from gpt4batch.services.caller import metrics
from gpt4batch.services.caller.budget import Budget
from gpt4batch.services.caller.downloads import plan_downloads
from gpt4batch.services.caller.paths import FORBIDDEN_PATH, PathPolicy
from gpt4batch.services.caller.requests import prepared, request_estimate

log = get_logger("gpt4batch.caller")

#: iErr code for a failure of our own making (a bug), not the upstream's.
INTERNAL_ERROR = IErrCode.INTERNAL

_Answered = tuple[Answer, ConversationState]

_RECORDS_OK = metrics.RECORDS.labels("ok")
_RECORDS_FAILED = metrics.RECORDS.labels("failed")


@dataclass
class Outcome:
    """A conversation's end: the upstream's answers as it sent them (each checked against
    `ChatResponse`), or the error that stopped it."""

    source: Record
    answers: list[Answer] = field(default_factory=list)
    error: IErr | None = None
    downloads: list[DownloadJob] = field(default_factory=list)
    #: HTTP status of the upstream's failing answer (None: no upstream failure).
    upstream_status: int | None = None
    #: Tokens and cost of the answers (issue 21: the output line's `usage`).
    usage: Usage = field(default_factory=Usage)

    @property
    def ok(self) -> bool:
        return self.error is None

    @cached_property
    def record(self) -> Record:
        """The output record as models: the input record with `answers` and `iErr` set."""
        # Shallow: only `answers` and `iErr` are set on the copy, nothing nested is changed.
        record = self.source.model_copy()
        record.answers = [ChatResponse.model_validate(answer) for answer in self.answers]
        record.iErr = self.error
        record.usage = self.usage.as_line()  # type: ignore[attr-defined]  # (an extra field: kept after the known ones)
        return record

    def record_object(self, received: dict[str, Any]) -> dict[str, Any]:
        """The output record in JSON form: `received` (the input record as sent) with
        `answers` (as the upstream sent them) and `iErr` set.

        Keys in the order the models write them (their fields first, then unknown keys
        as received), so an output line reads as it did when built through `record`.
        """
        record: dict[str, Any] = {}
        for name in _RECORD_FIELDS:
            if name == "answers":
                record[name] = self.answers
            elif name == "iErr":
                record[name] = None if self.error is None else self.error.model_dump(mode="json")
            elif name in received:
                record[name] = received[name]
        for key, value in received.items():
            if key not in record:
                record[key] = value
        record["usage"] = self.usage.as_line()
        return record


_RECORD_FIELDS = tuple(Record.model_fields)


@dataclass
class ConversationRunner:
    """Runs AskMessages; `client_for(kind)` gives the (cached) client of an upstream kind."""

    client_for: Callable[[str], ConversationClient]
    default_kind: str
    policy: RetryPolicy
    download_prefix: str = "GPT4API"
    enable_download: bool = True
    paths: PathPolicy = field(default_factory=PathPolicy)
    deadline: float | None = None
    """Seconds one conversation may take (None: no limit); see `run`."""
    prices: Prices = field(default_factory=Prices)
    budget: Budget | None = None
    """A spending limit (`run --budget-usd`): see services/caller/budget.py."""
    completion_estimate: int = 1000
    """Tokens a budget reserves for an answer whose request sets no limit."""
    max_tokens: int | None = None
    """The caller's `--max-tokens` (an ask's override wins)."""
    account: str = DEFAULT_ACCOUNT

    def __post_init__(self) -> None:
        self._tokens_prompt = metrics.TOKENS.labels(self.account, "prompt")
        self._tokens_completion = metrics.TOKENS.labels(self.account, "completion")
        self._cost = metrics.COST.labels(self.account)

    async def run(self, msg: AskMessage) -> Outcome:
        """The record with its answers (or iErr) and the downloads its answers planned.

        With a `deadline` the whole conversation, retries included, ends by then
        (iErr 588, the answers so far kept): past nsqd's --max-msg-timeout the
        message would be given to another caller while this one still runs it.
        """
        record = msg.record
        refusal = self.paths.refusal(msg)
        if refusal is not None:
            log.warning("ask refused", record=record.id, reason=refusal)
            _RECORDS_FAILED.inc()
            return Outcome(record, error=IErr(code=int(FORBIDDEN_PATH), message=refusal))
        overrides = msg.overrides
        client = self.client_for((overrides and overrides.upstream) or self.default_kind)
        if msg.request is not None:  # a Batch API line: sent whole, or as an ask, or refused
            ready = prepared(msg, client.kind)
            if isinstance(ready, IErr):
                _RECORDS_FAILED.inc()
                return Outcome(record, error=ready)
            msg = ready
        budget = self.budget if self.budget is not None and self.budget.applies(msg.batch) else None
        if budget is None:
            return self._counted(await self._converse(msg, client))
        estimate = self.estimate_cost(msg, client.kind)
        if not budget.reserve(estimate):
            metrics.BUDGET_REFUSED.inc()
            _RECORDS_FAILED.inc()
            error = IErr(code=int(IErrCode.BUDGET_REACHED), message=budget.refusal())
            return Outcome(record, error=error)
        outcome = Outcome(record)
        try:
            outcome = await self._converse(msg, client)
        finally:
            budget.settle(estimate, outcome.usage.cost_usd)
        return self._counted(outcome)

    def estimate_cost(self, msg: AskMessage, kind: str) -> float:
        """What `msg`'s conversation is expected to cost (a budget's reservation)."""
        if msg.request is not None:
            estimate = request_estimate(msg.request, self.completion_estimate)
            return self.prices.cost(*estimate)
        prompt, completion, calls = asks_estimate(
            msg.record.asks,
            kind=kind,
            completion_default=self.completion_estimate,
            max_tokens=(msg.overrides and msg.overrides.max_tokens) or self.max_tokens,
            history=msg.history or (),
        )
        return self.prices.cost(prompt, completion, calls)

    def _counted(self, outcome: Outcome) -> Outcome:
        """`outcome`, its tokens and cost counted in the metrics."""
        usage = outcome.usage
        if usage.calls:
            self._tokens_prompt.inc(usage.prompt_tokens)
            self._tokens_completion.inc(usage.completion_tokens)
            self._cost.inc(usage.cost_usd)
        return outcome

    async def _converse(self, msg: AskMessage, client: ConversationClient) -> Outcome:
        """The asks of `msg`, in order, chained; the outcome with the usage of its answers."""
        if msg.request is not None:
            return await self._send_whole(msg, client)
        record = msg.record
        overrides = msg.overrides
        usage = Usage()
        answers: list[Answer] = []
        jobs: list[DownloadJob] = []
        state = ConversationState(messages=tuple(msg.history or ()))
        asks = record.asks
        if msg.history and client.kind != "openai" and asks:
            # Kinds that chain by conversation ids take no message list: the history
            # (a Batch API line's system prompt and earlier turns) goes in as text.
            first = asks[0].model_copy(update={"content": fold_history(msg.history, asks[0])})
            asks = [first, *asks[1:]]
        error: IErr | None = None
        status: int | None = None
        ends = None if self.deadline is None else time.monotonic() + self.deadline
        try:
            async with asyncio.timeout_at(None if ends is None else _loop_time(ends)):
                for ask in asks:
                    # What this ask uploaded survives its retries: only the failed call repeats.
                    uploaded: dict[str, Any] = {}
                    state_before = state
                    call = partial(
                        client.run_ask,
                        state,
                        ask,
                        base_dir=msg.base_dir,
                        overrides=overrides,
                        uploaded=uploaded,
                    )
                    try:
                        answer, state = await with_retries(
                            partial(_checked, call),
                            self.policy,
                            _count_retry(record.id),
                            deadline=ends,
                        )
                        if self.enable_download:
                            jobs += plan_downloads(
                                answer,
                                batch=msg.batch,
                                prefix=self.download_prefix,
                                record_id=record.id,
                                ask_id=ask.id,
                            )
                    except UpstreamError as exc:
                        if exc.status >= 590:  # no HTTP answer: not seen by the response hook
                            metrics.UPSTREAM_CALLS.labels("any", str(exc.status)).inc()
                        error = IErr(code=int(exc.status), message=f"ask {ask.id}: {exc.message}")
                        status = int(exc.status)
                        break
                    except Exception as exc:  # a bug of ours: record it, keep the batch going
                        log.exception(
                            "conversation failed unexpectedly", record=record.id, ask=ask.id
                        )
                        text = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                        message = f"ask {ask.id}: internal error: {text}"
                        error = IErr(code=int(INTERNAL_ERROR), message=message)
                        break
                    answers.append(answer)
                    sent = state_before.messages if client.kind == "openai" else ()
                    prompt, completion, estimated = call_tokens(
                        answer,
                        partial(ask_prompt_tokens, ask.content, len(ask.image_paths()), sent),
                    )
                    usage.add(
                        prompt, completion, estimated=estimated, prices=self.prices, answer=answer
                    )
        except TimeoutError:
            done = len(answers)
            stopped = record.asks[min(done, len(record.asks) - 1)]
            error = IErr(
                code=int(IErrCode.DEADLINE),
                message=f"ask {stopped.id}: the conversation ran past its "
                f"{self.deadline:g} s deadline (--conversation-deadline, kept below nsqd's "
                f"--max-msg-timeout); {done} of {len(record.asks)} asks answered",
            )
        (_RECORDS_OK if error is None else _RECORDS_FAILED).inc()
        return Outcome(record, answers, error, jobs, status, usage)

    async def _send_whole(self, msg: AskMessage, client: ConversationClient) -> Outcome:
        """`msg.request` sent as it is (an OpenAI-style upstream), retried like an ask; the
        answer kept as the text the upstream sent (common/received_answer.py)."""
        request = msg.request
        assert request is not None
        send = getattr(client, "call_endpoint", None)
        if send is None:  # (prepared() converts or refuses for every other kind)
            raise TypeError(f"{client.kind} client cannot send a request whole")
        body = request.body
        received: list[bytes | None] = [None]

        async def call() -> _Answered:
            answer, received[0] = await send(request.endpoint, body)
            return answer, ConversationState()

        usage = Usage()
        ends = None if self.deadline is None else time.monotonic() + self.deadline
        try:
            async with asyncio.timeout_at(None if ends is None else _loop_time(ends)):
                answer, _ = await with_retries(
                    partial(_checked, call), self.policy, _count_retry(msg.record.id), deadline=ends
                )
        except UpstreamError as exc:
            if exc.status >= 590:  # no HTTP answer: not seen by the response hook
                metrics.UPSTREAM_CALLS.labels("any", str(exc.status)).inc()
            _RECORDS_FAILED.inc()
            error = IErr(code=int(exc.status), message=f"{request.endpoint}: {exc.message}")
            return Outcome(msg.record, error=error, upstream_status=int(exc.status))
        except TimeoutError:
            _RECORDS_FAILED.inc()
            message = (
                f"{request.endpoint}: the request ran past its {self.deadline:g} s deadline "
                "(--conversation-deadline, kept below nsqd's --max-msg-timeout)"
            )
            return Outcome(msg.record, error=IErr(code=int(IErrCode.DEADLINE), message=message))
        except Exception as exc:  # a bug of ours: record it, never requeue (and pay again)
            log.exception("request failed unexpectedly", record=msg.record.id)
            _RECORDS_FAILED.inc()
            text = redact_text(f"{type(exc).__name__}: {exc}")[:300]
            error = IErr(code=int(INTERNAL_ERROR), message=f"internal error: {text}")
            return Outcome(msg.record, error=error)
        prompt, completion, estimated = call_tokens(answer, partial(estimate_prompt_tokens, body))
        usage.add(prompt, completion, estimated=estimated, prices=self.prices, answer=answer)
        _RECORDS_OK.inc()
        return Outcome(msg.record, [kept(answer, received[0])], usage=usage)


async def _checked(call: Callable[[], Awaitable[_Answered]]) -> _Answered:
    """`call`'s answer, checked as the sink will read it (the answer is kept as sent).

    An answer that does not fit `ChatResponse` is a bad response of this one call
    (iErr 596, retried by the policy like any other): raised out of the conversation
    it would requeue the whole message and pay for every earlier ask again.
    """
    answer, state = await call()
    try:
        ChatResponse.model_validate(answer)
    except ValidationError as exc:
        where = ".".join(str(part) for part in exc.errors()[0]["loc"]) or "answer"
        raise bad_response(
            "chat", f"answer does not fit the chat answer shape at {where}"
        ) from None
    return answer, state


def _loop_time(monotonic_deadline: float) -> float:
    """A `time.monotonic()` instant on the running loop's clock."""
    loop = asyncio.get_running_loop()
    return loop.time() + (monotonic_deadline - time.monotonic())


def _count_retry(record_id: str) -> Callable[[RetryableError, int, float], None]:
    def on_retry(exc: RetryableError, retry: int, wait: float) -> None:
        metrics.RETRIES.labels(str(exc.status)).inc()
        log.info(
            "retrying upstream call",
            record=record_id,
            status=exc.status,
            retry=retry,
            wait=round(wait, 2),
            error=exc.message,
        )

    return on_retry


def fold_history(history: list[dict[str, Any]], ask: Ask) -> str:
    """OpenAI-style messages before `ask`, as a transcript that ends with the ask's text."""
    parts = []
    for message in history:
        content = message.get("content")
        if isinstance(content, list):
            content = "\n".join(
                str(p.get("text")) for p in content if isinstance(p, dict) and "text" in p
            )
        parts.append(f"{str(message.get('role', 'user')).capitalize()}: {content or ''}")
    parts.append(f"User: {ask.content}")
    return "\n\n".join(parts)
