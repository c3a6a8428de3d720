"""pynsq patched for our bus: frames written and read in bulk, no reconnects after a
deliberate close, no tracebacks for refused connections.

pynsq facts this module is built around (see shared/NSQ-NOTES.md):
- Readers/Writers must be created inside the running loop (`NsqBus.start()` does).
- Neither class has a final close: reconnects are blocked by our subclasses.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Callable, Sequence
from typing import Any

import nsq
from nsq import conn as nsq_conn
from nsq import event as nsq_event
from nsq import protocol
from tornado.ioloop import IOLoop

from gpt4batch.common.logging import get_logger

log = get_logger("gpt4batch.nsq")

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
    the publishes waiting on it (retried by `Publisher.send`) and lets nsqd redeliver
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


class Writer(_CoalescingClient, nsq.Writer):  # type: ignore[misc]  # pynsq has no types
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


class Reader(_CoalescingClient, nsq.Reader):  # type: ignore[misc]  # pynsq has no types
    closing = False

    def __init__(
        self, *args: Any, on_msg_timeout: Callable[[float], None] | None = None, **kwargs: Any
    ) -> None:
        #: Told each nsqd's message timeout (s), which its IDENTIFY response announces.
        self.on_msg_timeout = on_msg_timeout
        super().__init__(*args, **kwargs)

    def _on_connection_identify(self, conn: Any, data: Any, **kwargs: Any) -> None:
        coalesce_reads(conn)  # from the read after IDENTIFY's response on
        super()._on_connection_identify(conn, data, **kwargs)

    def _on_connection_identify_response(self, conn: Any, data: Any, **kwargs: Any) -> None:
        timeout_ms = data.get("msg_timeout") if isinstance(data, dict) else None
        if self.on_msg_timeout is not None and isinstance(timeout_ms, int) and timeout_ms > 0:
            self.on_msg_timeout(timeout_ms / 1000)
        super()._on_connection_identify_response(conn, data, **kwargs)

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
        if not self.closing:  # see Writer._on_connection_error
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


async def frames_written(clients: Sequence[Any], timeout: float = 1.0) -> None:
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
