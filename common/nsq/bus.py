"""`Bus` on real NSQ through pynsq, on the asyncio-backed tornado loop.

pynsq facts this module is built around (see shared/NSQ-NOTES.md):
- `Writer.pub()`'s future only means "bytes sent"; nsqd's acknowledgement
  comes through the callback, which we turn into a future per publish.
- `Reader(max_tries=…)` silently FINs messages past the limit; we pass 0 and
  count attempts ourselves so such messages go to `…dead` instead.
The patched connection classes are in `patches`, the admin client in `admin`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

import nsq

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.authenticator import from_config as authenticator_from_config
from gpt4batch.common.bus import Bus, Subscription
from gpt4batch.common.dispatch import Dispatcher, dispatcher_for
from gpt4batch.common.errors import BusConnectError, ConfigError, PublishError
from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import NsqdAdmin
from gpt4batch.common.nsq.patches import Reader, Writer, frames_written
from gpt4batch.common.nsq.publish import Publisher
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.topics import standard_channels

log = get_logger("gpt4batch.nsq")


class _NsqDelivery:
    """Adapts pynsq's Message to the `TransportMessage` protocol."""

    __slots__ = ("_msg",)

    def __init__(self, msg: nsq.Message) -> None:
        self._msg = msg

    @property
    def id(self) -> str:
        raw = self._msg.id
        return raw.decode() if isinstance(raw, bytes) else str(raw)

    @property
    def attempts(self) -> int:
        return int(self._msg.attempts)

    @property
    def body(self) -> bytes:
        return bytes(self._msg.body)

    def finish(self) -> None:
        if not self._msg.has_responded():
            self._msg.finish()

    def requeue(self, delay: float) -> None:
        if not self._msg.has_responded():
            self._msg.requeue(time_ms=max(0, int(delay * 1000)), backoff=False)

    def touch(self) -> None:
        if not self._msg.has_responded():
            self._msg.touch()


class NsqBus(Bus):
    """Publishes to nsqd (acknowledged) and consumes through nsqd or nsqlookupd."""

    def __init__(
        self,
        settings: BaseServiceSettings,
        service: str,
        *,
        connect_timeout: float | None = None,
        publish_timeout: float = 30.0,
        max_msg_size: int | None = None,
        lookupd_poll_interval: int = 10,
        reconnect_interval: float = 2.0,
        prepare: Mapping[str, Sequence[str]] | None = None,
        authenticator: Authenticator | None = None,
    ) -> None:
        super().__init__(
            service=service,
            topics=settings.topics,
            touch_interval=settings.touch_interval,
            max_attempts=settings.max_attempts,
            # Services on NSQ must share a secret: none configured is a ConfigError.
            authenticator=authenticator or authenticator_from_config(settings.bus_secret_file),
        )
        if not settings.nsqd_tcp_address and not settings.lookupd_http_address:
            raise ConfigError(
                "no NSQ address: give --nsqd-tcp-address or --lookupd-http-address "
                "(GPT4BATCH_NSQD_TCP_ADDRESS / GPT4BATCH_LOOKUPD_HTTP_ADDRESS)"
            )
        self.settings = settings
        self.connect_timeout = connect_timeout
        self.publish_timeout = publish_timeout
        self.max_msg_size = max_msg_size or settings.max_msg_size
        self.lookupd_poll_interval = lookupd_poll_interval
        self.reconnect_interval = reconnect_interval
        self.prepare = standard_channels(self.topics) if prepare is None else prepare
        """Topics and channels created on every nsqd at start (besides the subscriptions')."""
        secret = settings.nsq_auth_secret
        self._conn_kwargs: dict[str, Any] = {"heartbeat_interval": 30}
        if secret is not None:
            self._conn_kwargs["auth_secret"] = secret.get_secret_value()
        self._writer: Writer | None = None
        self._publisher: Publisher | None = None
        self._readers: list[tuple[Reader, Dispatcher]] = []
        self._started = False
        self._creating: asyncio.Task[None] | None = None
        self.admin = NsqdAdmin(
            settings.nsqd_tcp_address,
            settings.nsqd_http_address,
            settings.lookupd_http_address,
            timeout=connect_timeout or 15.0,
            service=service,
        )

    # --- lifecycle --------------------------------------------------------------
    async def start(self) -> None:
        """Connect, create the topics and channels, subscribe. Waits as long as nsqd and
        nsqlookupd take to appear (`connect_timeout` None, the default: without end).

        A bus that consumes creates its channels before it subscribes (nothing flows to it
        before). A producer publishes as soon as nsqd takes its connection (PUB creates a
        topic; messages wait in a topic without channels) and creates the channels as soon
        as nsqd's HTTP API answers.
        """
        if self._started:
            return
        self._started = True
        loop = asyncio.get_running_loop()
        deadline = None if self.connect_timeout is None else loop.time() + self.connect_timeout
        await self._start_writer(deadline)
        wanted = self.wanted_channels()
        if self._subscriptions:
            await self.admin.wait_created(wanted, deadline)
        elif await self.admin.create(wanted):
            self._creating = loop.create_task(self.admin.wait_created(wanted, deadline))
        for sub in self._subscriptions:
            self._readers.append(self._start_reader(sub))

    async def _start_writer(self, deadline: float | None) -> None:
        addresses = await self.admin.wait_publish_addresses(deadline)
        self._writer = Writer(
            addresses, reconnect_interval=self.reconnect_interval, **self._conn_kwargs
        )
        self._publisher = Publisher(self._writer, self.publish_timeout)
        loop = asyncio.get_running_loop()
        while not self._open_conns():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self._writer.close()
                self._writer = self._publisher = None
                raise BusConnectError(
                    f"cannot connect to nsqd at {', '.join(addresses)} "
                    f"within {self.connect_timeout:.0f}s"
                )
            self._writer.ready.clear()  # woken by the next ready connection, not a poll
            try:
                await asyncio.wait_for(self._writer.ready.wait(), min(remaining or 1.0, 1.0))
            except TimeoutError:
                self.admin.say_once("waiting for nsqd", nsqd_tcp=addresses)
        log.info("connected to nsqd", addresses=addresses, service=self.service)

    def wanted_channels(self) -> dict[str, list[str]]:
        """Every topic and channel this bus uses: `prepare`'s and the subscriptions'."""
        wanted: dict[str, list[str]] = {t: list(c) for t, c in self.prepare.items()}
        for sub in self._subscriptions:
            channels = wanted.setdefault(sub.topic, [])
            if sub.channel not in channels:
                channels.append(sub.channel)
        return wanted

    async def delete_channel(self, topic: str, channel: str) -> None:
        await self.admin.delete_channel(topic, channel)

    async def backlog(self, topic: str, channel: str) -> int:
        return await self.admin.backlog(topic, channel)

    async def consumers(self, topic: str) -> int:
        return await self.admin.consumers(topic)

    async def create_channel(self, topic: str, channel: str) -> bool:
        return not await self.admin.create({topic: [channel]})

    async def nodes_with_channel(
        self, topic: str, channel: str, patience: float = 5.0
    ) -> dict[str, bool] | None:
        deadline = asyncio.get_running_loop().time() + patience
        return await self.admin.channel_on_nodes(topic, channel, deadline)

    def _open_conns(self) -> list[Any]:
        assert self._writer is not None
        return [c for c in self._writer.conns.values() if c.connected()]

    def _start_reader(self, sub: Subscription[Any]) -> tuple[Reader, Dispatcher]:
        dispatcher = dispatcher_for(self, sub)

        def on_message(message: nsq.Message) -> None:
            message.enable_async()
            dispatcher.spawn(_NsqDelivery(message))

        kwargs: dict[str, Any] = dict(
            topic=sub.topic,
            channel=sub.channel,
            message_handler=on_message,
            max_in_flight=sub.max_in_flight,
            max_tries=0,
            lookupd_poll_interval=self.lookupd_poll_interval,
            on_msg_timeout=self._heed_msg_timeout,
            **self._conn_kwargs,
        )
        if self.settings.lookupd_http_address:
            kwargs["lookupd_http_addresses"] = list(self.settings.lookupd_http_address)
        else:
            kwargs["nsqd_tcp_addresses"] = list(self.settings.nsqd_tcp_address)
        return Reader(**kwargs), dispatcher

    def _heed_msg_timeout(self, seconds: float) -> None:
        """nsqd gives a message not TOUCHed within its --msg-timeout to another consumer
        (and the upstream is paid twice): touch at least three times per timeout, whatever
        `touch_interval` says."""
        self.touch_interval = min(self.touch_interval, seconds / 3)

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work (RDY 0), drain in-flight handlers, then close connections."""
        self._stop_creating()
        for reader, _ in self._readers:
            reader.set_max_in_flight(0)
        await asyncio.gather(*(d.drain(grace) for _, d in self._readers))
        await frames_written([r for r, _ in self._readers])  # the last handlers' FIN/REQ
        for reader, _ in self._readers:
            reader.close()
        self._readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = self._publisher = None
        self._started = False

    def _stop_creating(self) -> None:
        creating, self._creating = self._creating, None
        if creating is None:
            return
        if not creating.done():
            creating.cancel()
            log.warning(
                "stopped before nsqd's HTTP API answered: topics/channels not created; "
                "the messages wait in their topics for the first channel",
                service=self.service,
            )
        elif not creating.cancelled() and creating.exception() is not None:
            log.warning("topics/channels not created", error=str(creating.exception()))

    async def stop_consuming(self, topic: str, grace: float = 30.0) -> None:
        chosen = [(r, d) for r, d in self._readers if r.topic == topic]
        for reader, _ in chosen:
            reader.set_max_in_flight(0)
        await asyncio.gather(*(d.drain(grace) for _, d in chosen))
        await frames_written([r for r, _ in chosen])
        for reader, _ in chosen:
            reader.close()
        self._readers = [pair for pair in self._readers if pair not in chosen]

    def throttle(self, topic: str, max_in_flight: int | None) -> None:
        for reader, dispatcher in self._readers:
            if reader.topic == topic:
                limit = dispatcher.sub.max_in_flight if max_in_flight is None else max_in_flight
                reader.set_max_in_flight(limit)

    @property
    def in_flight(self) -> int:
        return sum(len(d.in_flight) for _, d in self._readers)

    # --- publishing ---------------------------------------------------------------
    async def _publish(self, topic: str, bodies: list[bytes]) -> None:
        self.check_size(topic, bodies)
        if self._publisher is None:
            raise PublishError("bus not started")
        await self._publisher.publish(topic, bodies)
