"""`Dispatcher`: runs one subscription's handler on a delivery and acknowledges it, the
one place a message's fate is decided (see common/bus.py's docstring for the table)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from pydantic import ValidationError

from gpt4batch.common import metrics
from gpt4batch.common.authenticator import Refusals
from gpt4batch.common.bus import Bus, Subscription, TransportMessage
from gpt4batch.common.dispatch.dead_letters import letter_for
from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.logging import get_logger, redact_text

log = get_logger("gpt4batch.bus")


class Dispatcher:
    """Runs one subscription's handler on a delivery and acknowledges it."""

    def __init__(self, bus: Bus, sub: Subscription[Any]) -> None:
        self.bus = bus
        self.sub = sub
        self.in_flight: set[asyncio.Task[None]] = set()
        self._working: dict[int, TransportMessage] = {}
        self._sweeper: asyncio.Task[None] | None = None
        self.stopping = False
        self._labels = (bus.service, sub.topic)
        self._in_flight_gauge = metrics.IN_FLIGHT.labels(*self._labels)
        self._handler_seconds = metrics.HANDLER_SECONDS.labels(*self._labels)
        self._outcomes = {
            outcome: metrics.MESSAGES.labels(*self._labels, outcome)
            for outcome in ("finish", "requeue", "dead")
        }
        self._verify = bus.verifier(sub)
        self._refusals = Refusals(metrics.REFUSED.labels(*self._labels), sub.topic, sub.channel)

    def spawn(self, msg: TransportMessage) -> asyncio.Task[None] | None:
        """Handle `msg` in a task; once draining, give it straight back to NSQ instead."""
        if self.stopping:  # already on the wire when RDY 0 was sent
            msg.requeue(0)
            self._count("requeue")
            return None
        task = asyncio.get_running_loop().create_task(self.run(msg))
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)
        return task

    def _count(self, outcome: str) -> None:
        self._outcomes[outcome].inc()

    async def run(self, msg: TransportMessage) -> None:
        sub = self.sub
        model = await self._decode(msg)
        if model is None:
            return
        self._in_flight_gauge.inc()
        started = time.perf_counter()
        self._working[id(msg)] = msg
        self._touch_working()
        assert sub.handler is not None  # a Dispatcher's subscription: one message at a time
        try:
            await sub.handler(model, msg)
        except asyncio.CancelledError:
            msg.requeue(0)
            self._count("requeue")
            raise
        except Exception as exc:
            await self._failed(msg, exc, model)
        else:
            msg.finish()
            self._count("finish")
        finally:
            self._working.pop(id(msg), None)
            self._in_flight_gauge.dec()
            self._handler_seconds.observe(time.perf_counter() - started)

    async def _decode(self, msg: TransportMessage) -> Any | None:
        """The message's body as the subscription's model; an invalid body is dead-lettered
        (None)."""
        model = self.sub.model
        if self._verify is not None:
            why = self._verify(self.sub.topic, msg.body)
            if why is not None:
                await self._refuse(msg, why)
                return None
        try:
            return model.model_validate_json(msg.body)
        except ValidationError as exc:
            await self._dead(msg, f"invalid {model.__name__}: {_short_errors(exc)}")
            return None

    async def _refuse(self, msg: TransportMessage, why: str) -> None:
        """A message without a valid authenticator: counted, and dead-lettered as
        `unauthenticated` (a letter that never fails a record); a letter on the dead topic
        itself is only dropped (its copy stays on the `keep` channel)."""
        self._refusals.add(why)
        if self.sub.topic == self.bus.topics.dead:
            msg.finish()
            self._count("finish")
            return
        await self._dead(msg, f"refused: {why}", unauthenticated=True)

    def _touch_working(self) -> None:
        """Make sure the sweeper that touches the messages being worked on runs."""
        if self._sweeper is None or self._sweeper.done():
            self._sweeper = asyncio.get_running_loop().create_task(self._keep_touching())

    async def _failed(self, msg: TransportMessage, exc: Exception, model: Any) -> None:
        """Acknowledge a message whose handling raised `exc` (see common/bus.py's
        docstring), retrying as the subscription's `Retries` say."""
        retries = self.sub.retries
        spent = msg.attempts >= retries.limit(self.bus.max_attempts)
        if isinstance(exc, Requeue) and exc.bounded and spent:
            await self._give_up(msg, model, f"gave up after {msg.attempts} attempts: {exc.reason}")
        elif isinstance(exc, Requeue):
            delay = exc.delay
            if delay is None:
                delay = retries.backoff.delay(msg.attempts, exc.retry_after)
            msg.requeue(delay)
            self._count("requeue")
        elif isinstance(exc, Poison):
            await self._dead(msg, exc.reason)
        else:
            topic = self.sub.topic
            reason = redact_text(f"{type(exc).__name__}: {exc}")
            if spent:
                log.error("handler failed, giving up", topic=topic, id=msg.id, error=reason)
                await self._give_up(msg, model, f"gave up after {msg.attempts} attempts: {reason}")
            else:
                log.warning(
                    "handler failed, will retry",
                    topic=topic,
                    id=msg.id,
                    attempts=msg.attempts,
                    error=reason,
                    exc_info=not isinstance(exc, OSError),
                )
                msg.requeue(retries.backoff.delay(msg.attempts))
                self._count("requeue")

    async def _give_up(self, msg: TransportMessage, model: Any, reason: str) -> None:
        """Retries spent: the subscription's `give_up` (then FIN), else `…dead`."""
        give_up = self.sub.retries.give_up
        if give_up is None:
            await self._dead(msg, reason)
            return
        try:
            await give_up(model, msg, reason)
        except Exception as exc:  # e.g. nsqd down: keep the message rather than lose it
            log.error("giving up failed, requeueing", id=msg.id, error=str(exc))
            self._requeue_later(msg)
            return
        msg.finish()
        self._count("finish")

    def _requeue_later(self, msg: TransportMessage) -> None:
        msg.requeue(self.sub.retries.backoff.delay(msg.attempts))
        self._count("requeue")

    async def _dead(
        self, msg: TransportMessage, reason: str, *, unauthenticated: bool = False
    ) -> None:
        bus = self.bus
        letter = letter_for(
            bus.service, bus.max_msg_size, self.sub, msg, reason, unauthenticated=unauthenticated
        )
        try:
            await bus.publish(bus.topics.dead, letter)
        except Exception as exc:  # nsqd down: keep the message rather than lose it
            log.error("cannot dead-letter, requeueing", id=msg.id, error=str(exc))
            self._requeue_later(msg)
            return
        if not unauthenticated:  # refusals are logged by `Refusals`, rate-limited
            log.warning("dead-lettered", topic=self.sub.topic, id=msg.id, reason=reason[:300])
        msg.finish()
        self._count("dead")

    async def _keep_touching(self) -> None:
        """One loop per subscription TOUCHes every message still being handled.

        (A timer task per message would cost more than the handling of a fast one.)
        Touching a message that arrived a moment ago only resets its timeout early.
        """
        while self._working:
            await asyncio.sleep(self.bus.touch_interval)
            for msg in list(self._working.values()):
                msg.touch()

    async def drain(self, grace: float) -> None:
        """Take no more messages; wait up to `grace` s for in-flight handlers, then cancel
        (→ requeue) the rest."""
        self.stopping = True
        if not self.in_flight:
            return
        _, pending = await asyncio.wait(set(self.in_flight), timeout=grace)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=5)


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
