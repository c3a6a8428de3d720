"""The gateway's webhooks: the hook on a batch's status, and the sender that retries.

`on_status` is called by `BatchStatuses.save` *before* a new status is stored: when
the batch ends (completed, failed, expired, cancelled) its event is written to
the outbox and fsynced first, so no stored end goes without an event. The
sender then POSTs it to the one `--webhook-url`, signed (signing.py), and
retries while the receiver fails (non-2xx, a redirect, no connection, over
`--webhook-timeout`): attempt k+1 comes `--webhook-retry-delay` × 2^(k-1)
seconds after attempt k, at most `MAX_RETRY_DELAY` apart, `--webhook-max-attempts`
in all (defaults: 5 s doubling up to 2 h, 23 attempts, the last about 25 h after
the first); then the event is dropped and logged. Events go one at a time,
oldest due first; each attempt re-signs with its own `webhook-timestamp` and
keeps the event's `webhook-id`, so a receiver drops a repeat by that id (a
restart during an attempt sends it again).

An event is sent only once its batch's stored status is the one it announces,
so an event written just before a save that never happened (a crash in
between) waits for the batch to get there, and is replaced if the batch ends
otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.services.gateway import metrics
from gpt4batch.services.gateway.store import new_id
from gpt4batch.services.gateway.webhooks.config import MAX_RETRY_DELAY, WebhookConfig, redacted_url
from gpt4batch.services.gateway.webhooks.outbox import Event, Outbox

log = get_logger("gpt4batch.gateway")

#: The statuses that end a batch, and the event each one sends.
EVENT_TYPES = {
    "completed": "batch.completed",
    "failed": "batch.failed",
    "expired": "batch.expired",
    "cancelled": "batch.cancelled",
}
#: Seconds before looking again at an event whose batch has not stored its status yet.
NOT_YET = 5.0
USER_AGENT = "gpt4batch-webhooks"


def retry_delay(failed: int, first: float) -> float:
    """Seconds from the `failed`-th failed attempt to the next one."""
    return min(first * (1 << min(failed - 1, 40)), MAX_RETRY_DELAY)


class Webhooks:
    """The outbox of one gateway and its sender; without a config it only keeps the
    outbox (and says so when events wait in it)."""

    def __init__(
        self,
        config: WebhookConfig | None,
        folder: Path,
        status_of: Callable[[str], str | None],
        *,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.config = config
        self.outbox = Outbox(folder)
        self.status_of = status_of  # a batch's stored status (None: no such batch)
        self._transport = transport
        self._pending: dict[str, Event] = {}  # by batch id
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None

    # --- the hook ------------------------------------------------------------------
    def on_status(self, batch_id: str, status: str) -> None:
        """A batch is about to store `status`: an ending's event is made durable first."""
        kind = EVENT_TYPES.get(status)
        if kind is None or self.config is None:
            return
        known = self._pending.get(batch_id)
        if known is not None and known.type == kind:  # the same end again: one event
            if known.attempts == 0:  # it waited for this save (see the module docstring)
                known.next_at = 0.0
                self._wake.set()
            return
        if known is None and len(self._pending) >= self.config.max_pending:
            metrics.WEBHOOKS.labels("dropped").inc()
            log.warning(
                "webhook outbox full: event not kept",
                batch=batch_id,
                type=kind,
                max_pending=self.config.max_pending,
            )
            return
        event = Event(new_id("evt_"), kind, int(time.time()), batch_id)
        self.outbox.save(event)  # raises (disk full): the status is not saved either
        self._pending[batch_id] = event
        metrics.WEBHOOKS_PENDING.set(len(self._pending))
        self._wake.set()

    # --- lifecycle -------------------------------------------------------------------
    async def start(self) -> None:
        for event in self.outbox.load():
            self._pending[event.batch] = event
        metrics.WEBHOOKS_PENDING.set(len(self._pending))
        if self.config is None:
            if self._pending:
                log.warning(
                    "webhook events wait in the outbox: give --webhook-url to deliver them",
                    events=len(self._pending),
                    folder=str(self.outbox.folder),
                )
            return
        self._client = httpx.AsyncClient(
            transport=self._transport, follow_redirects=False, timeout=self.config.timeout
        )
        log.info(
            "webhooks on",
            url=redacted_url(self.config.url),
            pending=len(self._pending),
            max_attempts=self.config.max_attempts,
        )
        self._task = asyncio.get_running_loop().create_task(self._send_loop())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._client is not None:
            await self._client.aclose()

    # --- the sender --------------------------------------------------------------------
    async def _send_loop(self) -> None:
        while True:
            self._wake.clear()
            now = time.time()
            due = sorted(
                (e for e in self._pending.values() if e.next_at <= now), key=lambda e: e.next_at
            )
            for event in due:
                try:
                    await self._send(event)
                except Exception as exc:  # outbox not writable (disk full…), store busy: later
                    event.next_at = time.time() + NOT_YET
                    log.warning(
                        "webhook event not handled, retrying",
                        batch=event.batch,
                        error=str(exc),
                        exc_info=not isinstance(exc, OSError),
                    )
            if due:
                continue
            nearest = min((e.next_at for e in self._pending.values()), default=now + 3600)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, nearest - now))

    async def _send(self, event: Event) -> None:
        if self._pending.get(event.batch) is not event:
            return  # replaced meanwhile
        expected = event.type.removeprefix("batch.")
        status = self.status_of(event.batch)
        if status != expected:
            if status is None or status in EVENT_TYPES:  # gone, or ended otherwise
                self._forget(event)
                metrics.WEBHOOKS.labels("dropped").inc()
                log.warning("webhook event dropped", event_id=event.id, batch=event.batch)
            else:  # its status is not stored yet (see the module docstring)
                event.next_at = time.time() + NOT_YET
            return
        reason = await self._post(event)
        if self._pending.get(event.batch) is not event:
            return
        if reason is None:
            self._forget(event)
            metrics.WEBHOOKS.labels("delivered").inc()
            log.info("webhook delivered", event_id=event.id, type=event.type, batch=event.batch)
            return
        assert self.config is not None
        event.attempts += 1
        if event.attempts >= self.config.max_attempts:
            self._forget(event)
            metrics.WEBHOOKS.labels("gave_up").inc()
            log.warning(
                "webhook not delivered: attempts ran out",
                event_id=event.id,
                type=event.type,
                batch=event.batch,
                attempts=event.attempts,
                error=reason,
            )
            return
        wait = retry_delay(event.attempts, self.config.retry_delay)
        event.next_at = time.time() + wait
        self.outbox.save(event)
        metrics.WEBHOOKS.labels("failed").inc()
        log.warning(
            "webhook attempt failed, retrying",
            event_id=event.id,
            batch=event.batch,
            attempt=event.attempts,
            error=reason,
            wait=round(wait, 1),
        )

    async def _post(self, event: Event) -> str | None:
        """One signed attempt: None on 2xx, else why not. The answer's body is not read."""
        assert self.config is not None and self._client is not None
        body = event.body()
        timestamp = int(time.time())
        headers = {
            "webhook-id": event.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": self.config.secret.sign(event.id, timestamp, body),
            "content-type": "application/json",
            "user-agent": USER_AGENT,
        }
        try:
            async with asyncio.timeout(self.config.timeout):
                async with self._client.stream(
                    "POST", self.config.url, content=body, headers=headers
                ) as answer:
                    code = answer.status_code
        except TimeoutError:
            return "timeout"
        except httpx.HTTPError as exc:  # its text may name the URL: only its kind
            return type(exc).__name__
        return None if 200 <= code < 300 else f"HTTP {code}"

    def _forget(self, event: Event) -> None:
        self.outbox.remove(event)
        self._pending.pop(event.batch, None)
        metrics.WEBHOOKS_PENDING.set(len(self._pending))
