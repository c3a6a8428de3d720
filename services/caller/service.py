"""The caller as a service: AskMessage in, DownloadJobs and a ResultMessage out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Collection, Sequence
from contextlib import suppress
from dataclasses import replace

import httpx
from pydantic import BaseModel

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.errors import (
    ConfigError,
    IErrCode,
    MessageTooLarge,
    PublishError,
    Requeue,
)
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    AskMessage,
    BatchStopped,
    IErr,
    ResultMessage,
    result_json,
    stopped_error,
)
from gpt4batch.common.metrics import READINESS
from gpt4batch.common.result_parts import TooLarge, split_result
from gpt4batch.common.retry import REPUBLISH
from gpt4batch.common.topics import Channels
from gpt4batch.common.upstreams import ConversationClient, UpstreamConfig, make_client
from gpt4batch.services.caller import metrics
from gpt4batch.services.caller.accounts import (
    BUDGETS_REACHED,
    Account,
    AccountPool,
    load_accounts,
    pool_source,
    refused_midway,
)
from gpt4batch.services.caller.answered import AnsweredAsks
from gpt4batch.services.caller.auth_gate import AuthGate, token_source
from gpt4batch.services.caller.budget import Budget
from gpt4batch.services.caller.call_stats import CallStats
from gpt4batch.services.caller.conversation import ConversationRunner, Outcome
from gpt4batch.services.caller.feed import publish_feed
from gpt4batch.services.caller.http_client import make_http_client
from gpt4batch.services.caller.limits import Limiter, process_limiter
from gpt4batch.services.caller.limits.membership import new_member_id
from gpt4batch.services.caller.paths import PathPolicy
from gpt4batch.services.caller.registry import caller_registry
from gpt4batch.services.caller.settings import CallerSettings
from gpt4batch.services.caller.stopped import (
    LISTEN_FIRST,
    StoppedBatches,
    first_call_guard,
)

log = get_logger("gpt4batch.caller")

#: How many answered asks a caller remembers (a few MB): far more than can be in
#: flight when nsqd restarts, so a redelivery of an answered ask is never paid again.
ANSWERED_MEMORY = 100_000


class CallerService:
    """Consumes asks; the upstream token is checked when the service is built."""

    name = "caller"

    def __init__(
        self,
        settings: CallerSettings,
        *,
        config: UpstreamConfig | None = None,
        http: httpx.AsyncClient | None = None,
        limiter: Limiter | None = None,
        auth_gate: AuthGate | None = None,
        answered_memory: int | None = None,
        account_limiter: Callable[[CallerSettings], Limiter] | None = None,
        budget: Budget | None = None,
        calls: CallStats | None = None,
        own_batches: Collection[str] = (),
    ) -> None:
        """`own_batches`: batches no gateway stops (a `run`'s own): their asks do not wait
        to hear stop notices."""
        self.settings = settings
        #: `--accounts`: several accounts, each with its own token and limits (each limiter
        #: from `account_limiter`, default per process); None: the one token of the settings.
        self.pool: AccountPool | None = None
        if settings.accounts is not None:
            self.pool = AccountPool.build(
                load_accounts(settings.accounts),
                settings,
                account_limiter or process_limiter,
                on_all_out=self._all_accounts_out,
                on_back=self._account_back,
                prove_first=auth_gate is not None and not auth_gate.proven,
            )
            config = config or self.pool.accounts[0].config
        self._own_config = config is None
        self.config = config or settings.upstream_config()
        self.limiter = limiter or process_limiter(settings)
        self._http = http
        self._own_http = http is None
        self._clients: dict[str, ConversationClient] = {}
        self._account_runners: dict[str, ConversationRunner] = {}
        self._bus: Bus | None = None
        # Asks whose result this process already published (bounded, None: ANSWERED_MEMORY;
        # 0 where no ask is delivered twice), and those running now.
        self.answered = AnsweredAsks(
            ANSWERED_MEMORY if answered_memory is None else answered_memory
        )
        # Batches the gateway stopped: their asks are finished without a call.
        on_nsq = bool(settings.nsqd_tcp_address or settings.lookupd_http_address)
        self.stopped = StoppedBatches(
            listen_first=LISTEN_FIRST if on_nsq else 0.0, unstoppable=own_batches
        )
        self.instance = new_member_id()  # names this caller's channel of stop notices
        secret_files = settings.secret_files()
        if self.pool is not None and settings.accounts is not None:
            secret_files += [settings.accounts, *self.pool.secret_files()]
        self.paths = PathPolicy.build(settings.allowed_dirs, secret_files)
        self.runner = ConversationRunner(
            client_for=self.client_for,
            default_kind=self.config.kind,
            policy=settings.retry_policy(),
            download_prefix=settings.download_prefix,
            enable_download=settings.enable_download,
            paths=self.paths,
            deadline=settings.conversation_deadline or None,
            prices=settings.prices(),
            budget=budget,
            completion_estimate=settings.completion_tokens_estimate,
            max_tokens=settings.max_tokens,
        )
        self.auth: AuthGate = auth_gate or AuthGate(
            pool_source(settings.accounts)
            if settings.accounts is not None
            else token_source(
                settings.access_token,
                settings.credentials,
                "--access-token/GPT4BATCH_ACCESS_TOKEN",
                settings.access_token_file,
            ),
            retry_interval=settings.auth_retry_interval,
            on_close=lambda _error: self._throttle_asks(0),
            on_probe=self._probe_token,
            on_open=lambda: self._throttle_asks(None),
        )
        READINESS.append(self.auth.readiness)
        kinds = [a.config.kind for a in self.pool.accounts] if self.pool else [self.config.kind]
        #: What this caller serves, registered on nsqd for the gateway (None without NSQ).
        self.registry = caller_registry(settings, kinds)
        #: This service's own counts (a run gives its own: its progress and summary).
        self.calls = calls if calls is not None else CallStats()

    def client_for(self, kind: str) -> ConversationClient:
        return self._client(kind, self.config, self._clients, self.limiter)

    def _client(
        self,
        kind: str,
        config: UpstreamConfig,
        clients: dict[str, ConversationClient],
        limiter: Limiter,
    ) -> ConversationClient:
        """The (cached) client of `kind` on `config`, its calls paced by `limiter`."""
        client = clients.get(kind)
        if client is None:
            if self._http is None:
                raise RuntimeError("CallerService.start() was not awaited")
            if kind != config.kind:
                config = config.model_copy(update={"kind": kind})
            client = clients[kind] = make_client(
                config,
                self._http,
                before_call=first_call_guard(limiter.acquire, self.stopped),
                open_file=self.paths.open_for_upload,
                tokens=limiter.tokens,
            )
        return client

    def _account_runner(self, account: Account) -> ConversationRunner:
        """The conversation runner whose clients use `account`'s token and limiter, priced
        at its prices (the batch's budget, if any, shared with every account)."""
        runner = self._account_runners.get(account.name)
        if runner is None:

            def client_for(kind: str) -> ConversationClient:
                return self._client(kind, account.config, account.clients, account.limiter)

            runner = self._account_runners[account.name] = replace(
                self.runner,
                client_for=client_for,
                default_kind=account.config.kind,
                prices=account.prices,
                account=account.name,
            )
        return runner

    async def start(self) -> None:
        await self.limiter.start()
        if self.pool is not None:
            await self.pool.start()
        if self.settings.conversation_deadline:
            log.info(
                "conversations end at their deadline; keep nsqd --max-msg-timeout above it",
                conversation_deadline=self.settings.conversation_deadline,
            )
        if self._http is None:
            self._http = make_http_client(
                self.settings.concurrency, self.settings.http_transport, self.calls
            )
        if self.registry is not None:
            self.registry.start()

    def register(self, bus: Bus) -> None:
        self._bus = bus
        bus.subscribe(
            bus.topics.asks,
            Channels.CALLER,
            AskMessage,
            self.handle,
            max_in_flight=self.settings.concurrency,
        )
        bus.subscribe(
            bus.topics.stopped,
            Channels.stopped(self.instance),
            BatchStopped,
            self.on_stopped,
            max_in_flight=16,
        )

    async def on_stopped(self, msg: BatchStopped, delivery: Delivery) -> None:
        """The gateway stopped a batch (verified by the bus): its asks run no more."""
        if self.stopped.stop(msg.batch, msg.reason):
            log.info(
                "batch stopped: its asks are finished without calls",
                batch=msg.batch,
                reason=msg.reason,
            )

    async def handle(self, msg: AskMessage, delivery: Delivery) -> None:
        """Run the conversation, then publish downloads and the result; FIN follows.

        A refused token (401/403) is no result: the ask goes back (see `auth_gate`).
        """
        # First, before the stop: a copy of an ask whose call runs here waits for that call.
        # Answered unrun, it would let the gateway end a stopped batch before the paid answer.
        if await self.answered.already_answered(msg.batch, msg.seq, delivery.id, msg.republished):
            # Its result is on NSQ (see `answered`): never pay again.
            metrics.REDELIVERED_ANSWERED.inc()
            return
        if await self._finish_stopped(msg):
            return
        self.stopped.before_first_call(msg.batch)  # checked again after the calls/s slot
        if self.pool is not None:
            await self._handle_on_account(msg, delivery)
            return
        async with self.auth.turn():  # an unproven token: one conversation calls first
            if not self.auth.admits():
                raise Requeue(
                    "the upstream refuses the token", delay=self.auth.retry_interval or 1.0
                )
            async with self.answered.running(msg.batch, msg.seq, delivery.id):
                await self._answer(msg)

    async def _handle_on_account(self, msg: AskMessage, delivery: Delivery) -> None:
        """`--accounts`: run the conversation whole on one account of the pool.

        A refusal (401/403) takes the account out of the rotation; if no ask was
        answered yet the ask goes back at once and another account runs it; else the
        record ends with its answers so far (`refused_midway`): nothing is paid twice.
        """
        assert self.pool is not None
        account = self.pool.choose(msg.batch, msg.seq)
        if account is None:
            if self.pool.budgets_reached():  # no account will run it: the record says so
                await self._publish_outcome(msg, Outcome(msg.record, error=BUDGETS_REACHED))
                return
            delay = self.settings.auth_retry_interval or 1.0
            raise Requeue("no account is in the rotation (token refused)", delay=delay)
        probe = not account.gate.is_open  # this conversation tries a refused token again
        async with account.gate.turn():  # an unproven token: one conversation calls first
            if not probe and not account.in_rotation():  # refused while this one waited
                raise Requeue(f"account {account.name} left the rotation", delay=0.1)
            async with self.answered.running(msg.batch, msg.seq, delivery.id):
                self.calls.conversation(len(msg.record.asks))
                outcome = await self.pool.converse(account, self._account_runner(account), msg)
                if outcome is None:  # its budget cannot take it: another account may
                    raise Requeue(f"account {account.name}'s budget is reached", delay=0.1)
                if account.gate.observe(outcome.upstream_status, outcome.error):
                    if not outcome.answers:  # nothing paid: another account runs it
                        raise Requeue(f"account {account.name}'s token was refused", delay=0.1)
                    refused_midway(outcome, account.name, len(msg.record.asks))
                await self._publish_outcome(msg, outcome)

    async def _finish_stopped(self, msg: AskMessage) -> bool:
        """If the ask's batch was stopped: publish its result (failed, no call) and True."""
        reason = self.stopped.reason(msg.batch)
        if reason is None:
            return False
        metrics.STOPPED_ASKS.labels(reason).inc()
        await self._publish_outcome(msg, Outcome(msg.record, error=stopped_error(reason)))
        return True

    def _all_accounts_out(self, error: IErr) -> None:
        """Every account is refused: the caller stops taking asks (`run` stops)."""
        self.auth.close(error)

    def _account_back(self) -> None:
        if not self.auth.is_open:
            self.auth.open()

    async def _answer(self, msg: AskMessage) -> None:
        """Run the conversation and publish what it produced."""
        async with self.limiter.conversation():
            if await self._finish_stopped(msg):  # stopped while it waited for a slot
                return
            self.calls.conversation(len(msg.record.asks))
            outcome = await self.runner.run(msg)
        if self.auth.observe(outcome.upstream_status, outcome.error):
            raise Requeue("the upstream refused the token", delay=self.auth.retry_interval or 1.0)
        await self._publish_outcome(msg, outcome)

    async def _publish_outcome(self, msg: AskMessage, outcome: Outcome) -> None:
        """Publish the downloads, the result and the feed of a finished conversation."""
        topics = self.bus.topics
        if outcome.downloads:
            await self._publish_paid(topics.downloads, outcome.downloads)
        planned = [job.local for job in outcome.downloads]
        # The result's JSON straight from the ask's record as received and the answers as
        # the upstream sent them (no model round trip; the sink writes this record as is).
        record = outcome.record_object(msg.record_object())
        body = result_json(msg.batch, msg.seq, record, planned, record["usage"])
        try:
            await self._publish_paid(topics.results, [body])
        except MessageTooLarge as exc:
            result = ResultMessage(
                batch=msg.batch,
                seq=msg.seq,
                record=outcome.record,
                planned_downloads=planned,
                usage=record["usage"],
            )
            await self._publish_large(result, body, exc)
        if self.settings.feed:
            await publish_feed(
                self.bus,
                self.settings.feed_topic,
                msg.record.asks,
                outcome.answers,
                self.settings.feed_dir,
                msg.record.id,
            )

    def _throttle_asks(self, max_in_flight: int | None) -> None:
        if self._bus is not None:
            self._bus.throttle(self._bus.topics.asks, max_in_flight)

    def _probe_token(self) -> None:
        """Reload the token (a new `gpt4batch auth` or secret counts) and let one ask in."""
        if self._own_config and self.pool is None:
            try:
                self.config = self.settings.upstream_config()
                self._clients.clear()
            except ConfigError as exc:
                log.warning("cannot reload the token", error=str(exc))
        self._throttle_asks(1)

    @property
    def bus(self) -> Bus:
        if self._bus is None:
            raise RuntimeError("CallerService.register() was not called")
        return self._bus

    async def _publish_paid(self, topic: str, bodies: Sequence[BaseModel | bytes]) -> None:
        """Publish what cost upstream calls, retrying while nsqd is unreachable.

        Failing the handler instead would requeue the ask and pay for the whole
        conversation again; the bus keeps touching the message while we wait.
        """
        deadline = time.monotonic() + self.settings.publish_patience
        retry = 0
        while True:
            try:
                await self.bus.publish_many(topic, bodies)
                return
            except MessageTooLarge:
                raise
            except PublishError as exc:
                retry += 1
                wait = REPUBLISH.delay(retry)
                if time.monotonic() + wait > deadline:
                    raise
                log.warning("publish failed, retrying", topic=topic, error=str(exc), wait=wait)
                await asyncio.sleep(wait)

    async def _publish_large(
        self, result: ResultMessage, body: bytes, exc: MessageTooLarge
    ) -> None:
        """A result over the message limit (`body`, its JSON) travels in pieces the sink
        puts back together."""
        try:
            parts = split_result(result, body, exc.limit)
        except TooLarge as too_large:
            # Keep "one output line per input line": the record without its answers.
            log.error("result too large even in pieces", record=result.record.id, size=exc.size)
            record = result.record.model_copy(deep=True)
            record.answers = None
            record.iErr = IErr(code=int(IErrCode.RESULT_TOO_LARGE), message=str(too_large))
            await self._publish_paid(
                self.bus.topics.results, [result.model_copy(update={"record": record})]
            )
            return
        log.info("result sent in pieces", record=result.record.id, size=len(body), parts=len(parts))
        await self._publish_paid(self.bus.topics.result_parts, parts)

    async def close(self) -> None:
        if self.registry is not None:
            await self.registry.close()
        await self.limiter.close()
        if self.pool is not None:
            await self.pool.close()
        with suppress(ValueError):
            READINESS.remove(self.auth.readiness)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
