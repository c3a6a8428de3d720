"""Prometheus metrics of the sink (conventions in `gpt4batch.common.metrics`)."""

from __future__ import annotations

from collections import OrderedDict
from contextlib import suppress

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
NOT_OURS = Counter(
    f"{NAMESPACE}_sink_not_ours_dropped_total",
    "Messages finished unwritten because another owner writes their batch (at the file sink: "
    "the gateway or `run`, named by a signed manifest; on their own channels: other batches' "
    "copies), by kind (result, part, download, dead, manifest).",
    ["kind"],
)
UNSIGNED_CLAIMS = Counter(
    f"{NAMESPACE}_sink_unsigned_finisher_claims_total",
    "Manifests naming another finisher without a valid authenticator: the claim is ignored "
    "and the file sink writes the batch (a forgery, or a publisher with another secret).",
)
FSYNC_SECONDS = Histogram(
    f"{NAMESPACE}_sink_fsync_seconds",
    "Time of one batched write + fsync.",
    buckets=LATENCY_BUCKETS,
)
BATCH_WRITTEN = Gauge(
    f"{NAMESPACE}_sink_batch_written_records",
    "Output lines written so far, per batch (the 100 most recently active batches).",
    ["batch"],
)
BATCH_TOTAL = Gauge(
    f"{NAMESPACE}_sink_batch_expected_records",
    "Records the batch manifest announced, per batch (the 100 most recently active batches).",
    ["batch"],
)
#: Batches that have per-batch gauges at once; the least recently updated lose theirs.
MAX_BATCH_LABELS = 100


class BatchGauges:
    """The per-batch gauges, for at most `limit` batches: anyone can make up batch ids,
    and every label value is a time series Prometheus keeps. A completed or idle batch
    keeps its gauges until newer batches push it out: the dashboard's progress panel
    shows it at written = expected, and a batch that completes between two scrapes
    is still seen."""

    def __init__(self, limit: int = MAX_BATCH_LABELS) -> None:
        self.limit = limit
        self._batches: OrderedDict[str, None] = OrderedDict()

    def written(self, batch: str, done: int) -> None:
        self._keep(batch)
        BATCH_WRITTEN.labels(batch).set(done)

    def total(self, batch: str, total: int) -> None:
        self._keep(batch)
        BATCH_TOTAL.labels(batch).set(total)

    def forget(self, batch: str) -> None:
        """Drop the batch's gauges."""
        if batch not in self._batches:
            return
        del self._batches[batch]
        for gauge in (BATCH_WRITTEN, BATCH_TOTAL):
            with suppress(KeyError):  # a batch may have only one of the two
                gauge.remove(batch)

    def _keep(self, batch: str) -> None:
        self._batches[batch] = None
        self._batches.move_to_end(batch)
        while len(self._batches) > self.limit:
            self.forget(next(iter(self._batches)))


BATCH_GAUGES = BatchGauges()

BATCHES_COMPLETED = Counter(
    f"{NAMESPACE}_sink_batches_completed_total",
    "Batches whose output reached the manifest total.",
)
