"""Prometheus metrics of the sink (conventions in `gpt4batch.common.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gpt4batch.common.metrics import LATENCY_BUCKETS, NAMESPACE

LINES_WRITTEN = Counter(
    f"{NAMESPACE}_sink_lines_written_total",
    "Lines appended and fsynced, by file kind (output, rejects, downloads).",
    ["kind"],
)
DUPLICATES = Counter(
    f"{NAMESPACE}_sink_duplicates_dropped_total",
    "Redelivered messages dropped because their line is already written, by kind.",
    ["kind"],
)
FSYNC_SECONDS = Histogram(
    f"{NAMESPACE}_sink_fsync_seconds",
    "Time of one batched write + fsync.",
    buckets=LATENCY_BUCKETS,
)
BATCH_WRITTEN = Gauge(
    f"{NAMESPACE}_sink_batch_written_records",
    "Output lines written so far, per batch.",
    ["batch"],
)
BATCH_TOTAL = Gauge(
    f"{NAMESPACE}_sink_batch_expected_records",
    "Records the batch manifest announced, per batch.",
    ["batch"],
)
BATCHES_COMPLETED = Counter(
    f"{NAMESPACE}_sink_batches_completed_total",
    "Batches whose output reached the manifest total.",
)
