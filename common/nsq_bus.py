"""`Bus` on real NSQ through pynsq, on the asyncio-backed tornado loop.

pynsq facts this module is built around (see shared/NSQ-NOTES.md):
- Readers/Writers must be created inside the running loop (`start()` does).
- `Writer.pub()`'s future only means "bytes sent"; nsqd's acknowledgement
  comes through the callback, which we turn into a future per publish.
- Neither class has a final close: reconnects are blocked by our subclasses.
- `Reader(max_tries=…)` silently FINs messages past the limit; we pass 0 and
  count attempts ourselves so such messages go to `…dead` instead.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import nsq
from nsq import conn as nsq_conn
from nsq import event as nsq_event
from nsq import protocol
from tornado.ioloop import IOLoop

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.authenticator import from_config as authenticator_from_config
from gpt4batch.common.bus import Bus, Dispatcher, Subscription
from gpt4batch.common.errors import (
    BusConnectError,
    ConfigError,
    PublishError,
)
from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq_admin import NsqdAdmin
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.topics import standard_channels

log = get_logger("gpt4batch.nsq")

MPUB_MAX_MESSAGES = 1000
MPUB_MAX_BYTES = 4 * 1024 * 1024  # below nsqd's default --max-body-size (5 MiB)
#: How long frames (FIN/RDY/TOUCH/PUB) and single publishes wait to share a socket
#: write or an MPUB. pynsq hands over one message per loop iteration, so "per loop
#: tick" would coalesce nothing; 2 ms is invisible next to an upstream call.
COALESCE_SECONDS = 0.002
COALESCE_MAX_FRAMES = 256


def coalesce_writes(conn: Any) -> None:
    """Make `conn.send` queue its frame and write the frames of COALESCE_SECONDS at once.

    pynsq writes each FIN, RDY, TOUCH and PUB to the socket as it is sent: one
    syscall per frame, a fifth of the caller's time at a few hundred messages/s.
    Frames keep their order; a failed write closes the connection, which fails
    the publishes waiting on it (retried by `_send`) and lets nsqd redeliver
    unacknowledged messages, exactly as a failed immediate write would.
    """
    if getattr(conn, "_coalescing", False):
        return
    conn._coalescing = True
    pending: list[bytes] = []
    loop = asyncio.get_running_loop()

    def flush() -> None:
        if not pending:
            return  # flushed early (COALESCE_MAX_FRAMES); the timer finds nothing
        data = b"".join(pending)
        pending.clear()
        stream = conn.stream
        if stream is None or stream.closed():
            return
        try:
            stream.write(data)
        except Exception as exc:  # StreamClosedError and friends
            log.warning("nsqd write failed", conn=str(conn.id), error=str(exc))
            conn.close()

    def send(data: Any) -> None:
        pending.append(conn.encoder.encode(data))
        if len(pending) == 1:
            loop.call_later(COALESCE_SECONDS, flush)
        elif len(pending) >= COALESCE_MAX_FRAMES:
            flush()

    conn.send = send
    conn.flush_frames = flush


#: Most bytes one read takes from a connection (every complete frame in them is handled).
READ_CHUNK = 256 * 1024
_SIZE = struct.Struct(">l")


def coalesce_reads(conn: Any) -> None:
    """Make `conn` read whatever nsqd has sent in one go and hand over each complete frame.

    pynsq reads a frame's 4-byte size, then its body, each through its own tornado
    future and loop callback: most of a bare consumer's CPU at a few thousand
    messages/s. Frames are handed over in order, as before. Not for TLS, snappy or
    deflate connections, which replace their stream after IDENTIFY (pynsq's reads stay).
    """
    if conn.tls_v1 or conn.snappy or conn.deflate or getattr(conn, "_buffered_reads", False):
        return
    conn._buffered_reads = True
    buffer = bytearray()

    def fail(error: Exception) -> None:  # as pynsq reports a broken connection
        conn.close()
        conn.trigger(nsq_event.ERROR, conn=conn, error=error)

    def start_read() -> None:
        stream = conn.stream
        if stream is None:
            return
        try:
            read = stream.read_bytes(READ_CHUNK, partial=True)
        except OSError:  # closed
            fail(protocol.ConnectionClosedError("Stream is closed"))
            return
        IOLoop.current().add_future(read, on_read)

    def on_read(read: Any) -> None:
        try:
            buffer.extend(read.result())
        except Exception:  # closed: as pynsq reports it
            fail(protocol.IntegrityError("failed to unpack size"))
            return
        start, end = 0, len(buffer)
        while end - start >= 4:
            size = _SIZE.unpack_from(buffer, start)[0]
            if size < 0:
                fail(protocol.IntegrityError("failed to unpack size"))
                return
            if end - start - 4 < size:
                break
            frame = bytes(buffer[start + 4 : start + 4 + size])
            start += 4 + size
            try:
                conn.trigger(nsq_event.DATA, conn=conn, data=frame)
            except Exception:
                log.exception("uncaught exception in data event")
        del buffer[:start]
        start_read()

    conn._start_read = start_read


_pynsq_connect_callback = nsq_conn.AsyncConn._connect_callback


def _connect_callback(conn: Any, fut: Any) -> None:
    """pynsq's, minus the ERROR traceback ("Exception in callback … StreamClosedError") it
    makes the loop log each time nsqd refuses a connection (not up yet, restarting): the
    stream's close callback already reports that connection closed, and reconnects."""
    if fut.exception() is None:
        _pynsq_connect_callback(conn, fut)


nsq_conn.AsyncConn._connect_callback = _connect_callback


class _CoalescingClient:
    """Installs `coalesce_writes` on each connection as it identifies (before any frame)."""

    def _on_connection_identify(self, conn: Any, data: Any, **kwargs: Any) -> None:
        coalesce_writes(conn)
        super()._on_connection_identify(conn, data, **kwargs)  # type: ignore[misc]


class _Writer(_CoalescingClient, nsq.Writer):  # type: ignore[misc]  # pynsq has no types
    closing = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.ready = asyncio.Event()  # set when a connection becomes ready
        super().__init__(*args, **kwargs)

    def _on_connection_ready(self, conn: Any, **kwargs: Any) -> None:
        super()._on_connection_ready(conn, **kwargs)
        self.ready.set()

    def connect_to_nsqd(self, host: str, port: int) -> None:
        if not self.closing:
            super().connect_to_nsqd(host, port)

    def close(self) -> None:
        self.closing = True
        for conn in list(self.conns.values()):
            conn.close()

    def _on_connection_error(self, conn: Any, error: Any, **kwargs: Any) -> None:
        if not self.closing:
            super()._on_connection_error(conn, error, **kwargs)
            return
        # A deliberate close makes pynsq report "failed to unpack size": not an error.
        while conn.callback_queue:
            conn.callback_queue.pop(0)(conn, error)

    def _on_connection_close(self, conn: Any, **kwargs: Any) -> None:
        """pynsq's, minus its WARNING when the close is ours or nsqd never took the
        connection (a service waiting for nsqd says so once, not every 2 s)."""
        if not self.closing and conn.id in self.conns:
            log.warning("nsqd connection lost; reconnecting", conn=str(conn.id))
        self.conns.pop(conn.id, None)
        while conn.callback_queue:
            callback = conn.callback_queue.pop(0)
            try:
                callback(conn, protocol.ConnectionClosedError())
            except Exception:
                log.exception("uncaught exception in a publish callback")
        if not self.closing:
            asyncio.get_running_loop().call_later(
                self.reconnect_interval, self.connect_to_nsqd, conn.host, conn.port
            )


class _Reader(_CoalescingClient, nsq.Reader):  # type: ignore[misc]  # pynsq has no types
    closing = False

    def _on_connection_identify(self, conn: Any, data: Any, **kwargs: Any) -> None:
        coalesce_reads(conn)  # from the read after IDENTIFY's response on
        super()._on_connection_identify(conn, data, **kwargs)

    def connect_to_nsqd(self, host: str, port: int) -> None:
        if not self.closing:
            super().connect_to_nsqd(host, port)

    def query_lookupd(self) -> Any:
        if self.closing:
            return None
        return super().query_lookupd()

    def close(self) -> None:
        self.closing = True
        super().close()

    def _on_connection_error(self, conn: Any, error: Any, **kwargs: Any) -> None:
        if not self.closing:  # see _Writer._on_connection_error
            super()._on_connection_error(conn, error, **kwargs)

    def _on_connection_close(self, conn: Any, **kwargs: Any) -> None:
        if not self.closing:
            super()._on_connection_close(conn, **kwargs)
            return
        # Ours (stop): pynsq would log a WARNING per connection and plan a reconnect.
        self.conns.pop(conn.id, None)
        if conn.rdy_timeout:
            self.io_loop.remove_timeout(conn.rdy_timeout)
            conn.rdy_timeout = None


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
        self._writer: _Writer | None = None
        self._readers: list[tuple[_Reader, Dispatcher]] = []
        self._windows: dict[str, _Window] = {}
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
        self._writer = _Writer(
            addresses, reconnect_interval=self.reconnect_interval, **self._conn_kwargs
        )
        loop = asyncio.get_running_loop()
        while not self._open_conns():
            remaining = None if deadline is None else deadline - loop.time()
            if remaining is not None and remaining <= 0:
                self._writer.close()
                self._writer = None
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

    def _start_reader(self, sub: Subscription[Any]) -> tuple[_Reader, Dispatcher]:
        dispatcher = self.dispatcher(sub)

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
            **self._conn_kwargs,
        )
        if self.settings.lookupd_http_address:
            kwargs["lookupd_http_addresses"] = list(self.settings.lookupd_http_address)
        else:
            kwargs["nsqd_tcp_addresses"] = list(self.settings.nsqd_tcp_address)
        return _Reader(**kwargs), dispatcher

    async def stop(self, grace: float = 30.0) -> None:
        """Stop taking work (RDY 0), drain in-flight handlers, then close connections."""
        self._stop_creating()
        for reader, _ in self._readers:
            reader.set_max_in_flight(0)
        await asyncio.gather(*(d.drain(grace) for _, d in self._readers))
        await _frames_written([r for r, _ in self._readers])  # the last handlers' FIN/REQ
        for reader, _ in self._readers:
            reader.close()
        self._readers.clear()
        if self._writer is not None:
            self._writer.close()
            self._writer = None
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
        await _frames_written([r for r, _ in chosen])
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
        if len(bodies) == 1:
            await self._windowed(topic, bodies[0])
            return
        await asyncio.gather(*(self._send("mpub", topic, chunk) for chunk in _chunks(bodies)))

    async def _windowed(self, topic: str, body: bytes) -> None:
        """Publish one body in the topic's window: the bodies published within
        COALESCE_SECONDS go out as one MPUB (nsqd takes it whole or not at all), each caller
        awaiting that one acknowledgement."""
        window = self._windows.get(topic)
        if window is None or window.full(len(body)):
            window = self._windows[topic] = _Window()
            loop = asyncio.get_running_loop()
            loop.call_later(COALESCE_SECONDS, self._flush_window, topic, window)
        window.add(body)
        await asyncio.shield(window.acked)

    def _flush_window(self, topic: str, window: _Window) -> None:
        if self._windows.get(topic) is window:
            del self._windows[topic]
        bodies = window.bodies
        sending = (
            self._send("pub", topic, bodies[0])
            if len(bodies) == 1
            else self._send("mpub", topic, bodies)
        )
        task = asyncio.get_running_loop().create_task(sending)
        task.add_done_callback(window.settle)

    async def _send(self, command: str, topic: str, payload: bytes | list[bytes]) -> None:
        """One PUB/MPUB, awaited until nsqd answers OK; retried while it cannot be sent."""
        if self._writer is None:
            raise PublishError("bus not started")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.publish_timeout
        while True:
            ack: asyncio.Future[bytes] = loop.create_future()

            def on_response(_conn: Any, data: Any, ack: asyncio.Future[bytes] = ack) -> None:
                if ack.done():
                    return
                if isinstance(data, protocol.Error):
                    ack.set_exception(_PublishFailure(data))
                else:
                    ack.set_result(data)

            getattr(self._writer, command)(topic, payload, callback=on_response)
            remaining = deadline - loop.time()
            try:
                await asyncio.wait_for(ack, timeout=max(0.001, remaining))
                return
            except TimeoutError:
                raise PublishError(
                    f"nsqd did not acknowledge {command.upper()} to {topic} "
                    f"within {self.publish_timeout:.0f}s"
                ) from None
            except _PublishFailure as exc:
                if not exc.transient or loop.time() > deadline:
                    raise PublishError(
                        f"nsqd refused {command.upper()} to {topic}: {exc.error}"
                    ) from None
                await asyncio.sleep(0.2)


async def _frames_written(clients: Sequence[Any], timeout: float = 1.0) -> None:
    """Write the frames queued on the clients' connections (`coalesce_writes`) now, and
    wait until their streams have handed them to the sockets (at most `timeout` s):
    closing the connections then loses no FIN or REQ."""
    conns = [conn for client in clients for conn in client.conns.values()]
    for conn in conns:
        flush = getattr(conn, "flush_frames", None)
        if flush is not None:
            flush()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while any(_writing(conn) for conn in conns) and loop.time() < deadline:
        await asyncio.sleep(0.001)


def _writing(conn: Any) -> bool:
    stream = conn.stream
    return stream is not None and not stream.closed() and stream.writing()


class _Window:
    """Bodies waiting for the same MPUB, and the future of its acknowledgement."""

    __slots__ = ("acked", "bodies", "size")

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.size = 0
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def full(self, more: int) -> bool:
        return len(self.bodies) >= MPUB_MAX_MESSAGES or self.size + more > MPUB_MAX_BYTES

    def add(self, body: bytes) -> None:
        self.bodies.append(body)
        self.size += len(body) + 4

    def settle(self, task: asyncio.Task[None]) -> None:
        error = PublishError("publish cancelled") if task.cancelled() else task.exception()
        if error is None:
            self.acked.set_result(None)
            return
        self.acked.set_exception(error)
        self.acked.exception()  # retrieved here: every waiter may have gone (cancelled)


class _PublishFailure(Exception):
    def __init__(self, error: protocol.Error) -> None:
        super().__init__(str(error))
        self.error = error
        # Not sent, or the connection went away before the answer: worth retrying.
        self.transient = isinstance(error, protocol.SendError | protocol.ConnectionClosedError)


def _chunks(bodies: list[bytes]) -> list[list[bytes]]:
    chunks: list[list[bytes]] = []
    current: list[bytes] = []
    size = 0
    for body in bodies:
        if current and (len(current) >= MPUB_MAX_MESSAGES or size + len(body) > MPUB_MAX_BYTES):
            chunks.append(current)
            current, size = [], 0
        current.append(body)
        size += len(body) + 4
    if current:
        chunks.append(current)
    return chunks
