"""The message bus interface, and how a handler's ending decides its message's fate.

Handlers are `async def handler(message, delivery) -> None` functions that get
a decoded, validated pydantic model. What happens to the NSQ message follows
from how the handler ends (decided in one place, `common/dispatch/dispatcher.py`):

- returns            → FIN
- raises `Requeue`   → REQ after its delay (default: the subscription's backoff, at
                       least the Requeue's `retry_after`); a `Requeue(bounded=True)`
                       after the subscription's max attempts → `…dead` (or its `give_up`)
- raises `Poison`    → published to `…dead` with the reason, then FIN
- body fails to decode/validate → `…dead` with the reason, then FIN
- body on an authenticated topic without a valid authenticator (common/authenticator.py)
  → counted as refused, `…dead` marked `unauthenticated` (on `…dead` itself: dropped), FIN
- any other error    → REQ with backoff; after max attempts → `…dead` (or `give_up`)
- cancelled (shutdown past its grace) → REQ at once, so another consumer takes it

A subscription declares its retry policy (`Retries`: how many deliveries, the waits
between them, what giving up means); the bus's own applies otherwise.

This module is the interface; `common/dispatch/` decides each message's fate, and two
transports implement `Bus`: `NsqBus` (real nsqd, `common/nsq/`) and `MemoryBus` (unit
tests and the embedded single-process mode).
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from pydantic import BaseModel

from gpt4batch.common import metrics
from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.errors import MessageTooLarge
from gpt4batch.common.retry import REQUEUE, RetryPolicy
from gpt4batch.common.topics import Topics, check_name

M = TypeVar("M", bound=BaseModel)

MAX_REQUEUE_DELAY = REQUEUE.max_delay


class Delivery(Protocol):
    """What a handler may ask of the message it is working on."""

    @property
    def id(self) -> str: ...

    @property
    def attempts(self) -> int: ...

    @property
    def body(self) -> bytes:
        """The bytes received (e.g. to check a signed claim with `Bus.signed`)."""
        ...

    def touch(self) -> None: ...


Handler = Callable[[M, Delivery], Awaitable[None]]
BatchHandler = Callable[[list[tuple[M, Delivery]]], Awaitable[list[Exception | None]]]
"""Handles several messages at once; returns one outcome per message, in order: None
(→ FIN) or the exception that message's handling ended with (→ as for `Handler`)."""
GiveUp = Callable[[M, Delivery, str], Awaitable[None]]
"""What a handler does with a message whose bounded retries are spent, instead of
dead-lettering it: gets the message, its delivery and the reason ("gave up after N
attempts: …"); the message is then finished (were it to raise, requeued)."""


@dataclass(frozen=True)
class Retries(Generic[M]):
    """A subscription's retry policy, declared at subscribe time (as dramatiq's per actor).

    A message whose handler fails (raises `Requeue(bounded=True)` or an unexpected
    error) is requeued after `backoff`'s wait (a `Requeue`'s `retry_after` is a floor)
    until its `max_attempts`-th delivery, then dead-lettered, or given to `give_up`.
    `max_attempts` None: the bus's (`--max-attempts`).
    """

    max_attempts: int | None = None
    backoff: RetryPolicy = REQUEUE
    give_up: GiveUp[M] | None = None

    def limit(self, default: int) -> int:
        return default if self.max_attempts is None else self.max_attempts


#: The bus's own policy: `--max-attempts` deliveries, `REQUEUE`'s waits, then `…dead`.
DEFAULT_RETRIES: Retries[Any] = Retries()


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
    retries: Retries[M] = DEFAULT_RETRIES


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
    async def publish(
        self,
        topic: str,
        body: BaseModel | bytes,
        *,
        verbatim: bool = False,
        signed: bool = False,
    ) -> None:
        """Publish one message; returns once the transport has accepted it durably.

        On an authenticated topic the body gets this bus's authenticator, unless
        `verbatim`: bytes replayed as they were received keep theirs (or none), so a
        replayed forgery stays one. `signed`: on an open topic too, for a claim only our
        services may make (a manifest naming its finisher); consumers check it with
        `signed()`, and those that do not look ignore the extra field.
        """
        data = self._signed(topic, body, verbatim)
        if signed and not verbatim and topic not in self._authenticated:
            data = self.authenticator.sign(topic, data)
        await self._publish(self._topic(topic), [data])
        self._published(topic).inc()

    def signed(self, topic: str, delivery: Delivery) -> bool:
        """Whether `delivery` on `topic` carries a valid authenticator of this bus's secret:
        published by one of our services (on an authenticated topic the dispatcher has
        checked it already; this is for signed claims on open topics)."""
        return self.authenticator.verify(topic, delivery.body) is None

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
        retries: Retries[M] = DEFAULT_RETRIES,
    ) -> None:
        """Register a handler; consumption starts with `start()`. On an authenticated
        topic only verified messages reach it (unless `authenticate` is False). A failing
        message is retried as `retries` says (default: the bus's policy)."""
        check_name(topic)
        check_name(channel, "channel")
        self._subscriptions.append(
            Subscription(
                topic,
                channel,
                model,
                handler,
                max_in_flight,
                authenticate=authenticate,
                retries=retries,
            )
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
        retries: Retries[M] = DEFAULT_RETRIES,
    ) -> None:
        """Register a handler of message batches (see `BatchDispatcher`): it gets up to
        `every` messages, those that arrived within `interval` s of the first."""
        check_name(topic)
        check_name(channel, "channel")
        self._subscriptions.append(
            Subscription(
                topic, channel, model, None, max_in_flight, handler, every, interval, True, retries
            )
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

    def verifier(self, sub: Subscription[Any]) -> Callable[[str, bytes], str | None] | None:
        """How `sub`'s messages are verified (None: not at all)."""
        if sub.authenticate and sub.topic in self._authenticated:
            return self.authenticator.verify
        return None
