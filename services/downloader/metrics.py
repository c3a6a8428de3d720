"""Prometheus metrics of the downloader (conventions in `gpt4batch.common.metrics`)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from gpt4batch.common.metrics import LATENCY_BUCKETS, NAMESPACE

BYTES = Counter(f"{NAMESPACE}_downloader_bytes_total", "Bytes downloaded into place.")
DOWNLOADS = Counter(
    f"{NAMESPACE}_downloader_downloads_total",
    "Download attempts by outcome (ok, skipped, failed, refused; retry: a transient failure, "
    "retried unless the job's attempts are spent).",
    ["outcome"],
)
SECONDS = Histogram(
    f"{NAMESPACE}_downloader_download_duration_seconds",
    "Time of one download attempt, successful or not.",
    buckets=LATENCY_BUCKETS,
)
