"""Prometheus metrics shared by the services, and the per-service HTTP endpoint.

Conventions: every name starts with `gpt4batch_`; counters end in `_total`,
durations are histograms in `_seconds`; `service` labels the process role,
`topic` the NSQ topic, `outcome` one of finish|requeue|dead.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

NAMESPACE = "gpt4batch"

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)

# --- every consumer (recorded by the bus) ------------------------------------
MESSAGES = Counter(
    f"{NAMESPACE}_messages_total",
    "NSQ messages handled, by outcome (finish, requeue, dead).",
    ["service", "topic", "outcome"],
)
HANDLER_SECONDS = Histogram(
    f"{NAMESPACE}_handler_duration_seconds",
    "Time a handler spent on one message.",
    ["service", "topic"],
    buckets=LATENCY_BUCKETS,
)
IN_FLIGHT = Gauge(
    f"{NAMESPACE}_in_flight_messages",
    "Messages being handled right now.",
    ["service", "topic"],
)
REFUSED = Counter(
    f"{NAMESPACE}_refused_messages_total",
    "Messages refused because they carry no valid authenticator (forged, or another secret).",
    ["service", "topic"],
)
PUBLISHED = Counter(
    f"{NAMESPACE}_published_messages_total",
    "Messages published and acknowledged by nsqd.",
    ["service", "topic"],
)


#: Readiness checks of this process: each returns None when ready, else why not.
READINESS: list[Callable[[], str | None]] = []


def not_ready() -> list[str]:
    return [reason for check in READINESS if (reason := check()) is not None]


def _app() -> Callable[..., Iterable[bytes]]:
    metrics_app = make_wsgi_app()

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/ready":
            problems = not_ready()
            status = "503 Service Unavailable" if problems else "200 OK"
            start_response(status, [("Content-Type", "text/plain; charset=utf-8")])
            return [("\n".join(problems) if problems else "ready").encode() + b"\n"]
        return metrics_app(environ, start_response)  # type: ignore[no-any-return]

    return app


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics and /ready (200, or 503 with the reasons) on `host:port` (0 disables
    it); local only unless asked."""
    if not port:
        return
    server = make_server(host, port, _app(), ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True, name="metrics").start()
