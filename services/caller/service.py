"""The caller as a service: AskMessage in, DownloadJobs and a ResultMessage out."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

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
from gpt4batch.common.messages import AskMessage, IErr, ResultMessage, result_json
from gpt4batch.common.metrics import READINESS
from gpt4batch.common.result_parts import TooLarge, split_result
from gpt4batch.common.retry import REPUBLISH
from gpt4batch.common.topics import Channels
from gpt4batch.common.upstreams import ConversationClient, UpstreamConfig, make_client
from gpt4batch.common.upstreams.transport import UpstreamHttp
from gpt4batch.services.caller import metrics
from gpt4batch.services.caller.answered import AnsweredAsks
from gpt4batch.services.caller.auth_gate import AuthGate, token_source
from gpt4batch.services.caller.call_stats import CallStats
from gpt4batch.services.caller.conversation import ConversationRunner
from gpt4batch.services.caller.feed import publish_feed
from gpt4batch.services.caller.limits import Limiter, process_limiter
from gpt4batch.services.caller.paths import PathPolicy
from gpt4batch.services.caller.settings import CallerSettings

log = get_logger("gpt4batch.caller")

#: How many answered asks a caller remembers (a few MB): far more than can be in
#: flight when nsqd restarts, so a redelivery of an answered ask is never paid again.
ANSWERED_MEMORY = 100_000

_ENDPOINTS = {"uploaded": "upload", "all-tools": "chat", "gizmos": "chat", "completions": "chat"}


async def _mark_start(request: httpx.Request) -> None:
    request.extensions["gpt4batch_started"] = time.perf_counter()


def _endpoint(response: httpx.Response) -> str:
    last = response.request.url.path.rstrip("/").rsplit("/", 1)[-1]
    return _ENDPOINTS.get(last, "chat" if response.request.method == "POST" else last)


async def _observe(response: httpx.Response) -> None:
    endpoint = _endpoint(response)
    metrics.UPSTREAM_CALLS.labels(endpoint, str(response.status_code)).inc()
    if response.status_code == 429:
        metrics.RATE_LIMITED.inc()
    started = response.request.extensions.get("gpt4batch_started")
    if started is not None:
        metrics.UPSTREAM_SECONDS.labels(endpoint).observe(time.perf_counter() - started)


#: The metric children of each (endpoint, status) seen: `.labels()` once each, not per call.
_CALL_METRICS: dict[tuple[str, int], tuple[Any, Any]] = {}


def _observe_json_call(endpoint: str, status: int, seconds: float) -> None:
    children = _CALL_METRICS.get((endpoint, status))
    if children is None:
        children = _CALL_METRICS[endpoint, status] = (
            metrics.UPSTREAM_CALLS.labels(endpoint, str(status)),
            metrics.UPSTREAM_SECONDS.labels(endpoint),
        )
    children[0].inc()
    if status == 429:
        metrics.RATE_LIMITED.inc()
    children[1].observe(seconds)


def make_http_client(
    concurrency: int, transport: str = "aiohttp", calls: CallStats | None = None
) -> httpx.AsyncClient:
    """The process's one pooled HTTP client, instrumented for the upstream metrics.

    httpx's own connection pool slows down as concurrency grows (110 calls/s at
    64 in flight against 1,370 with aiohttp on this machine: bench/http_transport.py),
    so by default aiohttp does the I/O: JSON calls straight through an aiohttp
    session, the rest (uploads, streams) under the httpx API (`UpstreamHttp`).
    """
    hooks = {"request": [_mark_start], "response": [_observe]}
    observe = _observe_json_call
    if calls is not None:  # also count into the caller's own CallStats (a run's summary)

        async def count(response: httpx.Response) -> None:
            calls.record(_endpoint(response), response.status_code)

        def observe(endpoint: str, status: int, seconds: float) -> None:
            _observe_json_call(endpoint, status, seconds)
            calls.record(endpoint, status)

        hooks["response"].append(count)
    if transport == "aiohttp":
        return UpstreamHttp(
            concurrency + 8, observe=observe, event_hooks=hooks, follow_redirects=False
        )
    limits = httpx.Limits(max_connections=concurrency + 8, max_keepalive_connections=concurrency)
    return httpx.AsyncClient(limits=limits, event_hooks=hooks, follow_redirects=False)


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
        answered_memory: int = ANSWERED_MEMORY,
    ) -> None:
        self.settings = settings
        self._own_config = config is None
        self.config = config or settings.upstream_config()
        self.limiter = limiter or process_limiter(settings)
        self._http = http
        self._own_http = http is None
        self._clients: dict[str, ConversationClient] = {}
        self._bus: Bus | None = None
        # Asks whose result this process already published (bounded), and those running now.
        self.answered = AnsweredAsks(answered_memory)
        self.runner = ConversationRunner(
            client_for=self.client_for,
            default_kind=self.config.kind,
            policy=settings.retry_policy(),
            download_prefix=settings.download_prefix,
            enable_download=settings.enable_download,
            paths=PathPolicy.build(settings.allowed_dirs, [settings.credentials]),
            deadline=settings.conversation_deadline or None,
        )
        self.auth = auth_gate or AuthGate(
            token_source(
                settings.access_token, settings.credentials, "--access-token/GPT4BATCH_ACCESS_TOKEN"
            ),
            retry_interval=settings.auth_retry_interval,
            on_close=lambda _error: self._throttle_asks(0),
            on_probe=self._probe_token,
            on_open=lambda: self._throttle_asks(None),
        )
        READINESS.append(self.auth.readiness)
        self.calls = CallStats()  # this service's own counts (a run's progress and summary)

    def client_for(self, kind: str) -> ConversationClient:
        client = self._clients.get(kind)
        if client is None:
            if self._http is None:
                raise RuntimeError("CallerService.start() was not awaited")
            config = (
                self.config
                if kind == self.config.kind
                else self.config.model_copy(update={"kind": kind})
            )
            client = self._clients[kind] = make_client(
                config, self._http, before_call=self.limiter.acquire, tokens=self.limiter.tokens
            )
        return client

    async def start(self) -> None:
        await self.limiter.start()
        if self.settings.conversation_deadline:
            log.info(
                "conversations end at their deadline; keep nsqd --max-msg-timeout above it",
                conversation_deadline=self.settings.conversation_deadline,
            )
        if self._http is None:
            self._http = make_http_client(
                self.settings.concurrency, self.settings.http_transport, self.calls
            )

    def register(self, bus: Bus) -> None:
        self._bus = bus
        bus.subscribe(
            bus.topics.asks,
            Channels.CALLER,
            AskMessage,
            self.handle,
            max_in_flight=self.settings.concurrency,
        )

    async def handle(self, msg: AskMessage, delivery: Delivery) -> None:
        """Run the conversation, then publish downloads and the result; FIN follows.

        A refused token (401/403) is no result: the ask goes back (see `auth_gate`).
        """
        if await self.answered.already_answered(msg.batch, msg.seq, delivery.id):
            # Its result is on NSQ (see `answered`): never pay again.
            metrics.REDELIVERED_ANSWERED.inc()
            return
        async with self.auth.turn():  # an unproven token: one conversation calls first
            if not self.auth.admits():
                raise Requeue(
                    "the upstream refuses the token", delay=self.auth.retry_interval or 1.0
                )
            async with self.answered.running(msg.batch, msg.seq, delivery.id):
                await self._answer(msg)

    async def _answer(self, msg: AskMessage) -> None:
        """Run the conversation and publish what it produced."""
        self.calls.conversation(len(msg.record.asks))
        async with self.limiter.conversation():
            outcome = await self.runner.run(msg)
        if self.auth.observe(outcome.upstream_status, outcome.error):
            raise Requeue("the upstream refused the token", delay=self.auth.retry_interval or 1.0)
        topics = self.bus.topics
        if outcome.downloads:
            await self._publish_paid(topics.downloads, outcome.downloads)
        planned = [job.local for job in outcome.downloads]
        # The result's JSON straight from the ask's record as received and the answers as
        # the upstream sent them (no model round trip; the sink writes this record as is).
        body = result_json(msg.batch, msg.seq, outcome.record_object(msg.record_object()), planned)
        try:
            await self._publish_paid(topics.results, [body])
        except MessageTooLarge as exc:
            result = ResultMessage(
                batch=msg.batch, seq=msg.seq, record=outcome.record, planned_downloads=planned
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
        if self._own_config:
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
        await self.limiter.close()
        with suppress(ValueError):
            READINESS.remove(self.auth.readiness)
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None
