"""Ingest's Prometheus counters (names follow gpt4batch.common.metrics)."""

from __future__ import annotations

from prometheus_client import Counter

from gpt4batch.common.metrics import NAMESPACE

LINES = Counter(f"{NAMESPACE}_ingest_lines_total", "Non-blank input lines read.")
PUBLISHED = Counter(
    f"{NAMESPACE}_ingest_published_total",
    "Records published, by kind (ask, passthrough, reject).",
    ["kind"],
)
REJECTED = Counter(
    f"{NAMESPACE}_ingest_rejected_total", "Input lines rejected, by reason class.", ["reason"]
)
