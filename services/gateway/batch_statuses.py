"""The statuses of the gateway's batches: saving a batch, and what a status change sets off.

Every save of a batch goes through `BatchStatuses.save`: a new status is announced
(`on_status`, the webhooks) before it is stored, so no end goes unannounced, and the
status gauge follows (metrics.py). The statuses kept here also say which batches'
results the gateway's ledger takes (`owns`).
"""

from __future__ import annotations

from collections.abc import Callable

from gpt4batch.services.gateway import metrics
from gpt4batch.services.gateway.store import ACTIVE_STATUSES, BatchRecord, Store


class BatchStatuses:
    """The status of every batch of `store`, saved through `save`."""

    def __init__(self, store: Store, on_status: Callable[[str, str], None] | None = None) -> None:
        self.store = store
        self.on_status = on_status  # called before a new status is stored (webhooks)
        self._statuses: dict[str, str] = {}

    def load(self) -> None:
        """The statuses of every stored batch (at start-up)."""
        for batch in self.store.batches():
            self._statuses[batch.id] = batch.status
        metrics.count_statuses(self._statuses)

    def of(self, batch_id: str) -> str | None:
        return self._statuses.get(batch_id)

    def owns(self, batch_id: str) -> bool:
        """Its active batches: a finished one's ledger is not loaded again at a restart,
        and a late copy of one of its messages is dropped."""
        return self._statuses.get(batch_id) in ACTIVE_STATUSES

    def save(self, batch: BatchRecord) -> None:
        changed = self._statuses.get(batch.id) != batch.status
        if changed and self.on_status is not None:
            self.on_status(batch.id, batch.status)  # durable first: no end goes unannounced
        self.store.save_batch(batch)
        if changed:
            self._statuses[batch.id] = batch.status
            metrics.count_statuses(self._statuses)
