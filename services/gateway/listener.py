"""The gateway's HTTP listener: header and body timeouts, a connection cap, and accept
errors that pause accepting instead of spinning.

Tornado's defaults wait an hour for a request's headers and accept until the
process runs out of file descriptors, after which every readable event on the
listening socket raises `EMFILE` again (one traceback per event). Here:
headers must arrive within `header_timeout`, small bodies within
`body_timeout` (uploads get their own, see api.py); at `max_connections` open
connections accepting stops until one closes; an accept error stops accepting
for a moment and is logged at most once per `LOG_EVERY` seconds with a count.
"""

from __future__ import annotations

import errno
import resource
import socket
import time
from typing import Any

from tornado.httpserver import HTTPServer
from tornado.ioloop import IOLoop

from gpt4batch.common.logging import get_logger
from gpt4batch.common.service import HttpServer
from gpt4batch.services.gateway import metrics

log = get_logger("gpt4batch.gateway")

#: Seconds between two log lines about the same kind of refusal.
LOG_EVERY = 10.0
#: Seconds accepting pauses after an accept error (out of descriptors, memory…).
ACCEPT_PAUSE = 0.5
#: Descriptors kept free for files, SQLite, NSQ and the metrics endpoint.
SPARE_FDS = 64
ACCEPTS_PER_EVENT = 128


class RateLimitedLog:
    """One warning per `every` seconds for a recurring event, with how many were not logged."""

    def __init__(self, event: str, every: float = LOG_EVERY) -> None:
        self.event = event
        self.every = every
        self._last = -every
        self._quiet = 0

    def __call__(self, **fields: Any) -> None:
        now = time.monotonic()
        if now - self._last < self.every:
            self._quiet += 1
            return
        log.warning(self.event, not_logged_since_last=self._quiet, **fields)
        self._last, self._quiet = now, 0


def connection_cap(wanted: int) -> int:
    """`wanted`, lowered to fit the process's open-files limit."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - SPARE_FDS))


class GuardedHTTPServer(HTTPServer):
    """An HTTPServer that stops accepting at `max_connections` and on accept errors."""

    def initialize(self, *args: Any, max_connections: int = 256, **kwargs: Any) -> None:
        super().initialize(*args, **kwargs)
        self.max_connections = max_connections

    def add_sockets(self, sockets: Any) -> None:
        self._loop = IOLoop.current()
        self._listening: list[socket.socket] = []
        self._paused = False
        self._at_cap_log = RateLimitedLog("connection cap reached: not accepting until one closes")
        self._accept_log = RateLimitedLog("accept failed: pausing accepting")
        for sock in sockets:
            self._sockets[sock.fileno()] = sock
            self._listening.append(sock)
            self._watch(sock)

    def _watch(self, sock: socket.socket) -> None:
        self._loop.add_handler(sock, lambda fd, events: self._accept(sock), IOLoop.READ)

    def _pause(self, seconds: float | None) -> None:
        """Stop accepting: for `seconds`, or (None) until a connection closes."""
        if self._paused:
            return
        self._paused = True
        for sock in self._listening:
            self._loop.remove_handler(sock)
        if seconds is not None:
            self._loop.call_later(seconds, self._resume)

    def _resume(self) -> None:
        if self._paused and self._listening:
            self._paused = False
            for sock in self._listening:
                self._watch(sock)

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_EVENT):
            if len(self._connections) >= self.max_connections:
                metrics.REFUSED.labels("connection_cap").inc()
                self._at_cap_log(max_connections=self.max_connections)
                self._pause(None)
                return
            try:
                connection, address = sock.accept()
            except BlockingIOError:
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS, ENOMEM…
                metrics.REFUSED.labels("accept_error").inc()
                self._accept_log(error=errno.errorcode.get(exc.errno or 0, str(exc)))
                self._pause(ACCEPT_PAUSE)
                return
            self._handle_connection(connection, address)
            metrics.CONNECTIONS.set(len(self._connections))

    def on_close(self, server_conn: object) -> None:
        super().on_close(server_conn)
        metrics.CONNECTIONS.set(len(self._connections))
        if self._paused and len(self._connections) < self.max_connections:
            self._resume()

    def stop(self) -> None:
        for sock in self._listening:
            if not self._paused:
                self._loop.remove_handler(sock)
            sock.close()
        self._listening = []
        self._sockets.clear()


def listener(
    app: Any,
    port: int,
    host: str,
    *,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    max_body_size: int,
) -> HttpServer:
    """The gateway's tornado application as an app part, guarded as this module says."""
    cap = connection_cap(max_connections)
    if cap < max_connections:
        log.warning(
            "connection cap lowered to fit the open-files limit (ulimit -n)", max_connections=cap
        )
    return HttpServer(
        app,
        port,
        host,
        server_class=GuardedHTTPServer,
        max_connections=cap,
        idle_connection_timeout=header_timeout,  # tornado's header timeout
        body_timeout=body_timeout,
        max_body_size=max_body_size,
    )
