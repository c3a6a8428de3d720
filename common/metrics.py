"""Prometheus metrics shared by the services, and the per-service HTTP endpoint.

Conventions: every name starts with `gpt4batch_`; counters end in `_total`,
durations are histograms in `_seconds`; `service` labels the process role,
`topic` the NSQ topic, `outcome` one of finish|requeue|dead.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

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
PUBLISHED = Counter(
    f"{NAMESPACE}_published_messages_total",
    "Messages published and acknowledged by nsqd.",
    ["service", "topic"],
)


def serve_metrics(port: int, host: str = "127.0.0.1") -> None:
    """Expose /metrics on `host:port` (0 disables it); local only unless asked."""
    if port:
        start_http_server(port, addr=host)
