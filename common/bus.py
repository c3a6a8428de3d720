"""The message bus interface and the one place acknowledgement is decided.

Handlers are `async def handler(message, delivery) -> None` functions that get
a decoded, validated pydantic model. What happens to the NSQ message follows
from how the handler ends (see `Dispatcher.run`):

- returns            → FIN
- raises `Requeue`   → REQ after its delay (default: exponential backoff); a
                       `Requeue(bounded=True)` after `max_attempts` → `…dead`
- raises `Poison`    → published to `…dead` with the reason, then FIN
- body fails to decode/validate → `…dead` with the reason, then FIN
- body on an authenticated topic without a valid authenticator (common/authenticator.py)
  → counted as refused, `…dead` marked `unauthenticated` (on `…dead` itself: dropped), FIN
- any other error    → REQ with backoff; after `max_attempts` → `…dead`
- cancelled (shutdown past its grace) → REQ at once, so another consumer takes it

Two transports implement `Bus`: `NsqBus` (real nsqd) and `MemoryBus`
(unit tests and the embedded single-process mode).
"""

from __future__ import annotations

import abc
import asyncio
import base64
import hashlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from gpt4batch.common import metrics
from gpt4batch.common.authenticator import OVERHEAD as AUTHENTICATOR_OVERHEAD
from gpt4batch.common.authenticator import Authenticator, Refusals
from gpt4batch.common.errors import MessageTooLarge, Poison, Requeue
from gpt4batch.common.logging import get_logger, redact_text
from gpt4batch.common.messages import DeadLetter
from gpt4batch.common.retry import REQUEUE
from gpt4batch.common.topics import Topics, check_name

M = TypeVar("M", bound=BaseModel)

log = get_logger("gpt4batch.bus")

MAX_REQUEUE_DELAY = REQUEUE.max_delay


class Delivery(Protocol):
    """What a handler may ask of the message it is working on."""

    @property
    def id(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    def touch(self) -> None: ...


Handler = Callable[[M, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[tuple[M, Delivery]]], Awaitable[list[Exception | None]]]
"""Handles several messages at once; returns one outcome per message, in order: None
(→ FIN) or the exception that message's handling ended with (→ as for `Handler`)."""


class TransportMessage(Protocol):
    """One delivery as a transport sees it (pynsq's Message or the in-memory one)."""

    @property
    def id(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def body(self) -> bytes: ...

    def finish(self) -> None: ...

    def requeue(self, delay: float) -> None: ...

    def touch(self) -> None: ...


@dataclass
class Subscription(Generic[M]):
    topic: str
    channel: str
    model: type[M]
    handler: Handler[M] | None
    max_in_flight: int
    batch_handler: BatchHandler[M] | None = None
    batch_every: int = 500
    batch_interval: float = 0.05
    #: Verify the authenticator of messages on authenticated topics (off only for tools
    #: that show every letter, verified or not: `gpt4batch dead`).
    authenticate: bool = True


def encode(body: BaseModel | bytes) -> bytes:
    return body if isinstance(body, bytes) else body.model_dump_json().encode()


def backoff_delay(attempts: int) -> float:
    """Requeue delay after the n-th failed attempt (the one retry model: `REQUEUE`)."""
    return REQUEUE.delay(attempts)


class Bus(abc.ABC):
    """Publish and consume gpt4batch messages."""

    #: Largest body the transport accepts (None: no limit); NsqBus sets nsqd's.
    max_msg_size: int | None = None

    def __init__(
        self,
        *,
        service: str,
        topics: Topics,
        touch_interval: float = 20.0,
        max_attempts: int = 10,
        authenticator: Authenticator | None = None,
    ) -> None:
        self.service = service
        self.topics = topics
        #: Signs what this bus publishes on `topics.authenticated()` and verifies what it
        #: consumes there; without one given, a random secret of this process only.
        self.authenticator = authenticator or Authenticator.generate()
        self._authenticated = frozenset(topics.authenticated())
        self.touch_interval = touch_interval
        self.max_attempts = max_attempts
        self._subscriptions: list[Subscription[Any]] = []
        self._checked_topics: set[str] = set()
        self._published_counters: dict[str, Any] = {}

    # --- publishing -----------------------------------------------------------
    async def publish(self, topic: str, body: BaseModel | bytes, *, verbatim: bool = False) -> None:
        """Publish one message; returns once the transport has accepted it durably.

        On an authenticated topic the body gets this bus's authenticator, unless
        `verbatim`: bytes replayed as they were received keep theirs (or none), so a
        replayed forgery stays one.
        """
        await self._publish(self._topic(topic), [self._signed(topic, body, verbatim)])
        self._published(topic).inc()

    async def publish_many(self, topic: str, bodies: Sequence[BaseModel | bytes]) -> None:
        """Publish several messages (MPUB on NSQ); returns once all are accepted."""
        if not bodies:
            return
        await self._publish(self._topic(topic), [self._signed(topic, b, False) for b in bodies])
        self._published(topic).inc(len(bodies))

    def _signed(self, topic: str, body: BaseModel | bytes, verbatim: bool) -> bytes:
        data = encode(body)
        if verbatim or topic not in self._authenticated:
            return data
        return self.authenticator.sign(topic, data)

    def _published(self, topic: str) -> Any:
        """The published-messages counter of `topic` (its metric child, made once)."""
        child = self._published_counters.get(topic)
        if child is None:
            child = self._published_counters[topic] = metrics.PUBLISHED.labels(self.service, topic)
        return child

    def check_size(self, topic: str, bodies: list[bytes]) -> None:
        """MessageTooLarge for a body over `max_msg_size`: the same limit on every bus."""
        limit = self.max_msg_size
        if limit is None:
            return
        for body in bodies:
            if len(body) > limit:
                raise MessageTooLarge(
                    f"message of {len(body)} bytes for {topic} exceeds the {limit}-byte "
                    "limit (--max-msg-size / GPT4BATCH_MAX_MSG_SIZE, = nsqd --max-msg-size)",
                    len(body),
                    limit,
                )

    def _topic(self, topic: str) -> str:
        if topic not in self._checked_topics:
            check_name(topic)
            self._checked_topics.add(topic)
        return topic

    @abc.abstractmethod
    async def _publish(self, topic: str, bodies: list[bytes]) -> None: ...

    # --- consuming --------------------------------------------------------------
    def subscribe(
        self,
        topic: str,
        channel: str,
        model: type[M],
        handler: Handler[M],
        *,
        max_in_flight: int = 200,
        authenticate: bool = True,
    ) -> None:
        """Register a handler; consumption starts with `start()`. On an authenticated
        topic only verified messages reach it (unless `authenticate` is False)."""
        check_name(topic)
        check_name(channel, "channel")
        self._subscriptions.append(
            Subscription(topic, channel, model, handler, max_in_flight, authenticate=authenticate)
        )

    def subscribe_batches(
        self,
        topic: str,
        channel: str,
        model: type[M],
        handler: BatchHandler[M],
        *,
        max_in_flight: int = 200,
        every: int = 500,
        interval: float = 0.05,
    ) -> None:
        """Register a handler of message batches (see `BatchDispatcher`): it gets up to
        `every` messages, those that arrived within `interval` s of the first."""
        check_name(topic)
        check_name(channel, "channel")
        self._subscriptions.append(
            Subscription(topic, channel, model, None, max_in_flight, handler, every, interval)
        )

    @abc.abstractmethod
    async def start(self) -> None:
        """Connect and start consuming every subscription."""

    @abc.abstractmethod
    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking messages, let in-flight ones finish for `grace` s, requeue the rest."""

    @abc.abstractmethod
    async def stop_consuming(self, topic: str, grace: float = 30.0) -> None:
        """Like `stop`, for the subscriptions of one topic only (staged shutdowns)."""

    def throttle(self, topic: str, max_in_flight: int | None) -> None:
        """Take at most `max_in_flight` messages of `topic` at once: 0 pauses (RDY 0 on NSQ),
        None restores each subscription's own limit. The memory bus ignores it."""
        return None

    @abc.abstractmethod
    async def backlog(self, topic: str, channel: str) -> int:
        """Messages of `channel` not yet finished: queued, deferred or in flight."""

    async def consumers(self, topic: str) -> int | None:
        """Clients subscribed to any channel of `topic` (None: this bus cannot tell)."""
        return None

    @abc.abstractmethod
    async def delete_channel(self, topic: str, channel: str) -> None:
        """Remove `channel` (and what it still holds) from `topic`."""

    async def create_channel(self, topic: str, channel: str) -> bool:
        """Create `topic` and `channel` on every node known now; False if some node's
        API did not answer (nothing waits for it)."""
        raise NotImplementedError

    async def nodes_with_channel(self, topic: str, channel: str) -> dict[str, bool] | None:
        """Each node (nsqd by TCP address) and whether `channel` exists on `topic` there;
        None if the nodes cannot be asked (nsqd's HTTP API does not answer)."""
        raise NotImplementedError

    def dispatcher(self, sub: Subscription[Any]) -> Dispatcher:
        return Dispatcher(self, sub) if sub.batch_handler is None else BatchDispatcher(self, sub)

    def verifier(self, sub: Subscription[Any]) -> Callable[[str, bytes], str | None] | None:
        """How `sub`'s messages are verified (None: not at all)."""
        if sub.authenticate and sub.topic in self._authenticated:
            return self.authenticator.verify
        return None

    async def dead_letter(
        self,
        sub: Subscription[Any],
        msg: TransportMessage,
        reason: str,
        *,
        unauthenticated: bool = False,
    ) -> None:
        letter = self.letter_for(sub, msg, reason, unauthenticated=unauthenticated)
        await self.publish(self.topics.dead, letter)

    def letter_for(
        self,
        sub: Subscription[Any],
        msg: TransportMessage,
        reason: str,
        *,
        unauthenticated: bool = False,
    ) -> bytes:
        """The dead letter of `msg`, always small enough to publish.

        A poison body can be as large as the biggest message nsqd takes, so the
        letter keeps at most `DEAD_BODY_KEEP` bytes of it (less if the bus's limit
        is smaller) plus the whole body's size and sha256; were the letter too big
        to publish, the message would be requeued forever instead.
        """
        body = msg.body
        limit = (self.max_msg_size or DEAD_BODY_KEEP * 16) - AUTHENTICATOR_OVERHEAD
        keep = min(DEAD_BODY_KEEP, limit // 16)
        reason = redact_text(reason)[:2000]
        while True:
            letter = encode(
                _letter(self.service, sub, msg, body[:keep], reason, len(body), unauthenticated)
            )
            if len(letter) <= limit or (keep == 0 and len(reason) <= 100):
                return letter
            keep //= 2
            if keep == 0:
                reason = reason[:100]


#: Bytes of a poison body a dead letter keeps (the rest is summed up by size and sha256).
DEAD_BODY_KEEP = 16 * 1024


def _letter(
    service: str,
    sub: Subscription[Any],
    msg: TransportMessage,
    kept: bytes,
    reason: str,
    size: int,
    unauthenticated: bool,
) -> DeadLetter:
    text = _utf8(kept, cut=len(kept) < size)
    body = msg.body
    return DeadLetter(
        topic=sub.topic,
        channel=sub.channel,
        service=service,
        id=msg.id,
        attempts=msg.attempts,
        reason=reason,
        at=time.time(),
        body=text,
        body_b64=None if text is not None else base64.b64encode(kept).decode(),
        body_size=size,
        body_sha256=hashlib.sha256(body).hexdigest(),
        body_truncated=len(kept) < size,
        unauthenticated=unauthenticated,
    )


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
            await self._failed(msg, exc)
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

    async def _failed(self, msg: TransportMessage, exc: Exception) -> None:
        """Acknowledge a message whose handling raised `exc` (see the module docstring)."""
        if isinstance(exc, Requeue) and exc.bounded and msg.attempts >= self.bus.max_attempts:
            await self._dead(msg, f"gave up after {msg.attempts} attempts: {exc.reason}")
        elif isinstance(exc, Requeue):
            delay = exc.delay if exc.delay is not None else backoff_delay(msg.attempts)
            msg.requeue(delay)
            self._count("requeue")
        elif isinstance(exc, Poison):
            await self._dead(msg, exc.reason)
        else:
            topic = self.sub.topic
            reason = redact_text(f"{type(exc).__name__}: {exc}")
            if msg.attempts >= self.bus.max_attempts:
                log.error("handler failed, giving up", topic=topic, id=msg.id, error=reason)
                await self._dead(msg, f"gave up after {msg.attempts} attempts: {reason}")
            else:
                log.warning(
                    "handler failed, will retry",
                    topic=topic,
                    id=msg.id,
                    attempts=msg.attempts,
                    error=reason,
                    exc_info=not isinstance(exc, OSError),
                )
                msg.requeue(backoff_delay(msg.attempts))
                self._count("requeue")

    async def _dead(
        self, msg: TransportMessage, reason: str, *, unauthenticated: bool = False
    ) -> None:
        try:
            await self.bus.dead_letter(self.sub, msg, reason, unauthenticated=unauthenticated)
        except Exception as exc:  # nsqd down: keep the message rather than lose it
            log.error("cannot dead-letter, requeueing", id=msg.id, error=str(exc))
            msg.requeue(backoff_delay(msg.attempts))
            self._count("requeue")
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


class BatchDispatcher(Dispatcher):
    """Runs a subscription's batch handler on groups of deliveries and acknowledges each.

    Group commit: a delivery waits up to `batch_interval` s (or until `batch_every` have
    arrived) and the handler gets the whole group, so it can make one write and one
    fsync for all of them; each message is then acknowledged by its own outcome, as by
    `Dispatcher.run`. One group is handled at a time; the next gathers meanwhile. No
    task per message: `spawn` returns a future that resolves once its message is
    acknowledged. `handler_duration_seconds` gets one observation per group.
    """

    def __init__(self, bus: Bus, sub: Subscription[Any]) -> None:
        super().__init__(bus, sub)
        self._pending: list[tuple[TransportMessage, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._runner: asyncio.Task[None] | None = None
        self._due = False

    def spawn(self, msg: TransportMessage) -> asyncio.Future[None] | None:  # type: ignore[override]
        if self.stopping:
            msg.requeue(0)
            self._count("requeue")
            return None
        loop = asyncio.get_running_loop()
        acked: asyncio.Future[None] = loop.create_future()
        self._pending.append((msg, acked))
        if len(self._pending) >= self.sub.batch_every:
            self._kick()
        elif self._timer is None:
            self._timer = loop.call_later(self.sub.batch_interval, self._kick)
        return acked

    def _kick(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._due = True
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run_groups())
            self.in_flight.add(self._runner)
            self._runner.add_done_callback(self.in_flight.discard)

    async def _run_groups(self) -> None:
        while self._due and self._pending:
            self._due = False
            group, self._pending = self._pending, []
            try:
                await self._run_group(group)
            finally:
                for _, acked in group:
                    if not acked.done():
                        acked.set_result(None)
            if len(self._pending) >= self.sub.batch_every or (self._pending and self.stopping):
                self._due = True
            elif self._pending and self._timer is None:
                loop = asyncio.get_running_loop()
                self._timer = loop.call_later(self.sub.batch_interval, self._kick)

    async def _run_group(self, group: list[tuple[TransportMessage, asyncio.Future[None]]]) -> None:
        sub = self.sub
        assert sub.batch_handler is not None
        items: list[tuple[Any, TransportMessage]] = []
        for msg, _ in group:
            model = await self._decode(msg)
            if model is not None:
                items.append((model, msg))
        if not items:
            return
        started = time.perf_counter()
        self._in_flight_gauge.inc(len(items))
        working = self._working
        for _, msg in items:
            working[id(msg)] = msg
        self._touch_working()
        settled = 0
        try:
            try:
                outcomes = await sub.batch_handler(cast("list[tuple[Any, Delivery]]", items))
                if len(outcomes) != len(items):
                    raise RuntimeError(f"{len(outcomes)} outcomes for {len(items)} messages")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                outcomes = [exc] * len(items)
            finished = 0
            for (_, msg), outcome in zip(items, outcomes, strict=True):
                if outcome is None:
                    msg.finish()
                    finished += 1
                else:
                    await self._failed(msg, outcome)
                settled += 1
            self._outcomes["finish"].inc(finished)
        except asyncio.CancelledError:
            self._requeue_now([msg for _, msg in items[settled:]])
            raise
        finally:
            for _, msg in items:
                working.pop(id(msg), None)
            self._in_flight_gauge.dec(len(items))
            self._handler_seconds.observe(time.perf_counter() - started)

    def _requeue_now(self, msgs: list[TransportMessage]) -> None:
        for msg in msgs:
            msg.requeue(0)
        if msgs:
            self._outcomes["requeue"].inc(len(msgs))

    async def drain(self, grace: float) -> None:
        """Handle what is gathered at once, then drain as `Dispatcher.drain`."""
        self.stopping = True
        if self._pending:
            self._kick()
        await super().drain(grace)
        left, self._pending = self._pending, []  # a group cancelled past the grace
        self._requeue_now([msg for msg, _ in left])
        for _, acked in left:
            acked.set_result(None)


def _utf8(data: bytes, *, cut: bool) -> str | None:
    """`data` as text if it is UTF-8 (a cut body may end inside a character)."""
    for end in range(len(data), max(-1, len(data) - (4 if cut else 1)), -1):
        try:
            return data[:end].decode()
        except UnicodeDecodeError:
            continue
    return None


def _short_errors(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)
