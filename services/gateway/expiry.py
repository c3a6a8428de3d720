"""When a batch's `completion_window` has passed: the one clock decision of a batch.

    in_progress ─(now ≥ expires_at)→ finalizing (expiring_at set: nothing more is
        published; callers finish its queued asks without calling) ─(every published
        ask has a result: counts)→ expired (files written, `expired_at`)

Only the window itself is read from the clock; when the expiring batch is done
draining is decided by the ledger's counts, like every other step. Should every
request have its result by then, the batch is `completed` after all. The
state is saved, so a gateway restarted after the window passed expires the
batch when it resumes it.
"""

from __future__ import annotations

from gpt4batch.services.gateway.store import BatchRecord


def is_due(batch: BatchRecord, now: float) -> bool:
    """Whether `batch` is running past its window and has not started expiring."""
    return batch.status == "in_progress" and batch.expiring_at is None and now >= batch.expires_at


def begin(batch: BatchRecord, now: float) -> None:
    """Stop the batch's publishing: `finalizing`, marked as expiring (save it)."""
    batch.status = "finalizing"
    batch.finalizing_at = batch.expiring_at = int(now)


def drained(batch: BatchRecord, written: int) -> bool:
    """Every published ask of an expiring batch has its result (`written` of them);
    when every request has one, nothing expired and it completes normally."""
    if written >= batch.total:
        batch.expiring_at = None
    return written >= batch.published


def wait_seconds(batch: BatchRecord | None, longest: float, now: float) -> float:
    """How long a driver may wait for results before looking at the clock again."""
    if batch is None or batch.status != "in_progress" or batch.expiring_at is not None:
        return longest
    return max(0.05, min(longest, batch.expires_at - now))
