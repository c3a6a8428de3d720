"""The API's Batch object of one batch: its record, its counts and usage read from the ledger.

A finalized batch's counts and usage were saved with it (its ledger is not loaded
again); a batch that never got past validation has none; any other reads its
ledger (the gateway's `SinkService`).
"""

from __future__ import annotations

from typing import Any

from gpt4batch.common.usage import batch_api_usage
from gpt4batch.services.gateway.store import BatchRecord
from gpt4batch.services.sink.ledger import LedgerCounts
from gpt4batch.services.sink.sink import Sink


class BatchView:
    """Reads a batch's counts and usage from `sink`'s ledgers for the API's Batch object."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink

    async def view(self, batch: BatchRecord) -> dict[str, Any]:
        """The Batch object of the API, its counts read from the ledger."""
        if batch.final_counts is not None:
            counts = batch.final_counts
        elif batch.status in ("validating", "failed"):
            counts = {"total": batch.total, "completed": 0, "failed": 0}
        else:
            c = await self.counts(batch.id)
            counts = {"total": batch.total, "completed": c.ok, "failed": c.failed}
        errors = None
        if batch.errors:
            errors = {"object": "list", "data": batch.errors}
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": errors,
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "in_progress_at": batch.in_progress_at,
            "expires_at": batch.expires_at,
            "finalizing_at": batch.finalizing_at,
            "completed_at": batch.completed_at,
            "failed_at": batch.failed_at,
            "expired_at": batch.expired_at,
            "cancelling_at": batch.cancelling_at,
            "cancelled_at": batch.cancelled_at,
            "request_counts": counts,
            "metadata": batch.metadata,
            "usage": None if batch.status in ("validating", "failed") else await self.usage(batch),
        }

    async def counts(self, batch_id: str) -> LedgerCounts:
        return (await self.sink.ledger(batch_id)).counts

    async def usage(self, batch: BatchRecord) -> dict[str, Any]:
        """What the batch's calls used and cost: saved with it once finalized (the ledger
        is not loaded again for it), else from its ledger."""
        if batch.final_usage is not None:
            return batch_api_usage(batch.final_usage)
        return batch_api_usage((await self.sink.ledger(batch.id)).usage.as_dict())
