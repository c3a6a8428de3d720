"""Running one record's conversation: asks in order, chained, retried, downloads planned.

Pure logic over a `ConversationClient`; no NSQ here, so it is tested with the
simulator or a fake client.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from gpt4batch.common.errors import IErrCode, RetryableError, UpstreamError
from gpt4batch.common.logging import get_logger, redact_text
from gpt4batch.common.messages import AskMessage, ChatResponse, DownloadJob, IErr, Record
from gpt4batch.common.upstreams import ConversationClient, ConversationState
from gpt4batch.services.caller import metrics
from gpt4batch.services.caller.downloads import plan_downloads
from gpt4batch.services.caller.paths import FORBIDDEN_PATH, PathPolicy
from gpt4batch.services.caller.retry import RetryPolicy, with_retries

log = get_logger("gpt4batch.caller")

#: iErr code for a failure of our own making (a bug), not the upstream's.
INTERNAL_ERROR = IErrCode.INTERNAL


@dataclass
class Outcome:
    record: Record
    downloads: list[DownloadJob] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.record.iErr is None


@dataclass
class ConversationRunner:
    """Runs AskMessages; `client_for(kind)` gives the (cached) client of an upstream kind."""

    client_for: Callable[[str], ConversationClient]
    default_kind: str
    policy: RetryPolicy
    download_prefix: str = "GPT4API"
    enable_download: bool = True
    paths: PathPolicy = field(default_factory=PathPolicy)

    async def run(self, msg: AskMessage) -> Outcome:
        record = msg.record.model_copy(deep=True)
        refusal = self.paths.refusal(msg)
        if refusal is not None:
            log.warning("ask refused", record=record.id, reason=refusal)
            record.answers = []
            record.iErr = IErr(code=int(FORBIDDEN_PATH), message=refusal)
            metrics.RECORDS.labels("failed").inc()
            return Outcome(record)
        overrides = msg.overrides
        client = self.client_for((overrides and overrides.upstream) or self.default_kind)
        answers: list[ChatResponse] = []
        jobs: list[DownloadJob] = []
        state = ConversationState(messages=tuple(msg.history or ()))
        error: IErr | None = None
        for ask in record.asks:
            call = partial(client.run_ask, state, ask, base_dir=msg.base_dir, overrides=overrides)
            try:
                answer, state = await with_retries(call, self.policy, _count_retry(record.id))
            except UpstreamError as exc:
                if exc.status >= 590:  # no HTTP answer: not seen by the response hook
                    metrics.UPSTREAM_CALLS.labels("any", str(exc.status)).inc()
                error = IErr(code=int(exc.status), message=f"ask {ask.id}: {exc.message}")
                break
            except Exception as exc:  # a bug of ours: record it, keep the batch going
                log.exception("conversation failed unexpectedly", record=record.id, ask=ask.id)
                text = redact_text(f"{type(exc).__name__}: {exc}")[:300]
                error = IErr(
                    code=int(INTERNAL_ERROR), message=f"ask {ask.id}: internal error: {text}"
                )
                break
            if self.enable_download:
                jobs += plan_downloads(
                    answer,
                    batch=msg.batch,
                    prefix=self.download_prefix,
                    record_id=record.id,
                    ask_id=ask.id,
                )
            answers.append(ChatResponse.model_validate(answer))
        record.answers = answers
        record.iErr = error
        metrics.RECORDS.labels("ok" if error is None else "failed").inc()
        return Outcome(record, jobs)


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
