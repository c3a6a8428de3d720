"""Prometheus metrics of the Batch API gateway (conventions in `gpt4batch.common.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gpt4batch.common.metrics import NAMESPACE

STATUSES = (
    "validating",
    "failed",
    "in_progress",
    "finalizing",
    "completed",
    "cancelling",
    "cancelled",
)

BATCHES = Gauge(
    f"{NAMESPACE}_gateway_batches",
    "Batches the gateway knows, by API status.",
    ["status"],
)
LINES = Counter(
    f"{NAMESPACE}_gateway_lines_total",
    "Batch lines: requests accepted (input), refused at validating (invalid), "
    "written to output and error files (output, error).",
    ["kind"],
)
BYTES = Counter(
    f"{NAMESPACE}_gateway_bytes_total",
    "File bytes received by POST /v1/files (uploaded) and sent as file content (downloaded).",
    ["direction"],
)
for _kind in ("input", "invalid", "output", "error"):
    LINES.labels(_kind)
for _direction in ("uploaded", "downloaded"):
    BYTES.labels(_direction)
REQUESTS = Counter(
    f"{NAMESPACE}_gateway_http_requests_total",
    "HTTP requests answered, by route, status code and tenant (the key's name in "
    "--api-key-file, key-N otherwise; '-' without a valid key).",
    ["route", "code", "tenant"],
)
REFUSED = Counter(
    f"{NAMESPACE}_gateway_refused_total",
    "Requests and connections refused before any work: no valid key (unauthorized), body "
    "over the route's limit (too_large), uploads at --max-concurrent-uploads (upload_cap), "
    "connections at --max-connections (connection_cap), accept errors (accept_error).",
    ["reason"],
)
for _reason in ("unauthorized", "too_large", "upload_cap", "connection_cap", "accept_error"):
    REFUSED.labels(_reason)
CONNECTIONS = Gauge(f"{NAMESPACE}_gateway_connections", "Open client connections.")
UPLOADS = Gauge(f"{NAMESPACE}_gateway_uploads_in_progress", "Uploads being received.")
ASKS_CONSUMERS = Gauge(
    f"{NAMESPACE}_gateway_asks_consumers",
    "Clients consuming the asks topic on every nsqd (callers); 0: batches cannot progress.",
)
WEBHOOKS = Counter(
    f"{NAMESPACE}_gateway_webhook_deliveries_total",
    "Webhook events: delivered (2xx), failed attempts (retried later), gave_up (the "
    "last attempt failed), dropped (never sent: the outbox was full, or the batch ended "
    "otherwise than the event said).",
    ["outcome"],
)
for _outcome in ("delivered", "failed", "gave_up", "dropped"):
    WEBHOOKS.labels(_outcome)
WEBHOOKS_PENDING = Gauge(
    f"{NAMESPACE}_gateway_webhook_pending",
    "Webhook events in the outbox, not yet delivered.",
)


def count_statuses(statuses: dict[str, str]) -> None:
    """Set the batches gauge from every batch's status."""
    counts = dict.fromkeys(STATUSES, 0)
    for status in statuses.values():
        counts[status] = counts.get(status, 0) + 1
    for status, n in counts.items():
        BATCHES.labels(status).set(n)
