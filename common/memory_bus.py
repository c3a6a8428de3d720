"""`Bus` in one process, with NSQ's delivery semantics, for unit tests and embedded runs.

Like nsqd: a topic copies each message to every channel; messages published
before any channel exists wait in the topic; each channel delivers to its
consumers with a per-subscription in-flight limit; requeue redelivers with
the attempt count increased. Unlike nsqd, a full channel makes `publish`
wait (bounded memory for million-line inputs in embedded mode).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.bus import Bus
from gpt4batch.common.dispatch import Dispatcher, dispatcher_for
from gpt4batch.common.settings import DEFAULT_MAX_MSG_SIZE
from gpt4batch.common.topics import Topics


@dataclass
class _MemoryMessage:
    id: str
    body: bytes
    channel: _Channel
    attempts: int = 0
    responded: bool = False
    touches: int = 0

    def finish(self) -> None:
        self.responded = True

    def requeue(self, delay: float) -> None:
        if self.responded:
            return
        self.responded = True
        loop = asyncio.get_running_loop()
        if delay > 0:
            self.channel.delayed += 1
            loop.call_later(delay, self.channel.put_back_delayed, self)
        else:
            self.channel.put_back(self)

    def touch(self) -> None:
        self.touches += 1


@dataclass
class _Channel:
    """A FIFO with a capacity; each put or get wakes one waiter (like asyncio.Queue), not all
    of a subscription's workers, and a requeue goes back to the front regardless of capacity."""

    capacity: int
    ready: deque[_MemoryMessage] = field(default_factory=deque)
    delayed: int = 0
    """Requeued messages waiting out their delay (part of the depth, like nsqd's deferred)."""
    _getters: deque[asyncio.Future[None]] = field(default_factory=deque)
    _putters: deque[asyncio.Future[None]] = field(default_factory=deque)

    async def put(self, msg: _MemoryMessage) -> None:
        while len(self.ready) >= self.capacity:
            await _wait(self._putters, lambda: len(self.ready) < self.capacity)
        self.ready.append(msg)
        _wake_one(self._getters)

    def put_back(self, msg: _MemoryMessage) -> None:
        msg.responded = False
        self.ready.appendleft(msg)
        _wake_one(self._getters)

    def put_back_delayed(self, msg: _MemoryMessage) -> None:
        self.delayed -= 1
        self.put_back(msg)

    async def get(self) -> _MemoryMessage:
        while not self.ready:
            await _wait(self._getters, lambda: bool(self.ready))
        msg = self.ready.popleft()
        _wake_one(self._putters)
        return msg


async def _wait(waiters: deque[asyncio.Future[None]], can_go: Callable[[], bool]) -> None:
    """Wait to be woken; a waiter cancelled after its wake-up passes the wake-up on."""
    waiter = asyncio.get_running_loop().create_future()
    waiters.append(waiter)
    try:
        await waiter
    except asyncio.CancelledError:
        if waiter in waiters:
            waiters.remove(waiter)
        elif can_go():
            _wake_one(waiters)
        raise


def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
    while waiters:
        waiter = waiters.popleft()
        if not waiter.done():
            waiter.set_result(None)
            return


@dataclass
class _Consumer:
    dispatcher: Dispatcher
    workers: list[asyncio.Task[None]] = field(default_factory=list)
    stopping: bool = False


@dataclass
class _Topic:
    channels: dict[str, _Channel] = field(default_factory=dict)
    backlog: list[tuple[str, bytes]] = field(default_factory=list)


class MemoryBus(Bus):
    """In-process bus; `published` keeps every body per topic when `record=True`."""

    def __init__(
        self,
        *,
        service: str = "embedded",
        topics: Topics | None = None,
        touch_interval: float = 20.0,
        max_attempts: int = 10,
        channel_capacity: int = 10_000,
        record: bool = False,
        max_msg_size: int | None = DEFAULT_MAX_MSG_SIZE,
        authenticator: Authenticator | None = None,
    ) -> None:
        super().__init__(
            service=service,
            topics=topics or Topics(),
            touch_interval=touch_interval,
            max_attempts=max_attempts,
            authenticator=authenticator,
        )
        self.channel_capacity = channel_capacity
        self.record = record
        self.max_msg_size = max_msg_size  # the same limit as nsqd's: one limit in every mode
        self.published: dict[str, list[bytes]] = {}
        self._topics: dict[str, _Topic] = {}
        self._ids = itertools.count(1)
        self._consumers: list[_Consumer] = []

    def _topic_state(self, name: str) -> _Topic:
        return self._topics.setdefault(name, _Topic())

    def channel(self, topic: str, name: str) -> _Channel:
        """The channel, created like nsqd does: it receives the topic's backlog."""
        state = self._topic_state(topic)
        chan = state.channels.get(name)
        if chan is None:
            chan = state.channels[name] = _Channel(self.channel_capacity)
            for msg_id, body in state.backlog:
                chan.ready.append(_MemoryMessage(msg_id, body, chan))
            state.backlog.clear()
        return chan

    async def _publish(self, topic: str, bodies: list[bytes]) -> None:
        self.check_size(topic, bodies)
        state = self._topic_state(topic)
        if self.record:
            self.published.setdefault(topic, []).extend(bodies)
        for body in bodies:
            msg_id = f"{next(self._ids):016x}"
            if not state.channels:
                state.backlog.append((msg_id, body))
                continue
            for chan in list(state.channels.values()):
                await chan.put(_MemoryMessage(msg_id, body, chan))

    def depth(self, topic: str, channel: str | None = None) -> int:
        state = self._topic_state(topic)
        if channel is None:
            return len(state.backlog)
        chan = state.channels.get(channel)
        return len(chan.ready) + chan.delayed if chan else 0

    async def backlog(self, topic: str, channel: str) -> int:
        working = sum(
            len(c.dispatcher.in_flight)
            for c in self._consumers
            if (c.dispatcher.sub.topic, c.dispatcher.sub.channel) == (topic, channel)
        )
        return self.depth(topic, channel) + working

    async def delete_channel(self, topic: str, channel: str) -> None:
        self._topic_state(topic).channels.pop(channel, None)

    async def create_channel(self, topic: str, channel: str) -> bool:
        self.channel(topic, channel)
        return True

    async def nodes_with_channel(self, topic: str, channel: str) -> dict[str, bool] | None:
        return {"memory": channel in self._topic_state(topic).channels}

    async def start(self) -> None:
        started = {id(c.dispatcher.sub) for c in self._consumers}
        for sub in self._subscriptions:
            if id(sub) in started:
                continue
            consumer = _Consumer(dispatcher_for(self, sub))
            chan = self.channel(sub.topic, sub.channel)
            consumer.workers = [
                asyncio.create_task(self._work(chan, consumer)) for _ in range(sub.max_in_flight)
            ]
            self._consumers.append(consumer)

    async def _work(self, chan: _Channel, consumer: _Consumer) -> None:
        dispatcher = consumer.dispatcher
        while not consumer.stopping:
            msg = await chan.get()
            if consumer.stopping:
                chan.put_back(msg)
                return
            msg.attempts += 1
            task = dispatcher.spawn(msg)
            if task is None:
                return
            try:
                # Shielded: stopping the worker must not cut a handler short;
                # `stop()` drains the dispatcher with its own grace period.
                await asyncio.shield(task)
            except asyncio.CancelledError:
                return

    async def stop(self, grace: float = 30.0) -> None:
        await self._stop([c for c in self._consumers], grace)

    async def stop_consuming(self, topic: str, grace: float = 30.0) -> None:
        await self._stop([c for c in self._consumers if c.dispatcher.sub.topic == topic], grace)

    async def _stop(self, consumers: list[_Consumer], grace: float) -> None:
        for consumer in consumers:
            consumer.stopping = True
        workers = [w for c in consumers for w in c.workers if not w.done()]
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        await asyncio.gather(*(c.dispatcher.drain(grace) for c in consumers))
        self._consumers = [c for c in self._consumers if c not in consumers]
