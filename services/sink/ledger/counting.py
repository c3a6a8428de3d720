"""A batch's counts as a pure state machine: no files, no I/O, no clock.

Which seqs have an entry, which of them failed (a later success replaces a
failure), which planned files are still owed, and the usage totals. The
journal load and the live writer feed it the same way, so a restart counts
exactly what the running sink counted.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from gpt4batch.common.seqset import SeqSet
from gpt4batch.common.usage import UsageTotals, read_usage

Status = Literal["open", "ready", "complete"]


@dataclass
class LedgerCounts:
    """A batch's counts. `total` is None until the manifest is known."""

    total: int | None = None
    done: int = 0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    replaced: int = 0
    downloads_planned: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0

    @property
    def downloads_done(self) -> int:
        """Planned files that have a result (fetched or failed)."""
        return self.downloads_ok + self.downloads_failed


@dataclass
class _Files:
    """Planned downloads: which are still owed, and the outcome of every file seen."""

    pending: set[str] = field(default_factory=set)
    planned: set[str] = field(default_factory=set)
    outcome: dict[str, bool] = field(default_factory=dict)
    """local name → fetched (True) / failed (False); a later success wins."""


class LedgerTally:
    """The counting part of a batch ledger and the queries on it."""

    def __init__(self) -> None:
        self.counts = LedgerCounts()
        self.usage = UsageTotals()
        """What the batch's calls used and cost (results that carried a usage)."""
        self.seen = SeqSet()
        self.failed = SeqSet()
        self.completed = False
        self._files = _Files()

    # --- queries ------------------------------------------------------------------
    def is_done(self, seq: int) -> bool:
        return seq in self.seen

    def is_failed(self, seq: int) -> bool:
        return seq in self.failed

    def is_duplicate(self, seq: int, ok: bool) -> bool:
        """Whether an entry for `seq` would add nothing (only a success replaces a failure)."""
        return seq in self.seen and not (ok and seq in self.failed)

    def download_adds_nothing(self, local: str, ok: bool) -> bool:
        """Whether this file already has this outcome, or was fetched."""
        before = self._files.outcome.get(local)
        return before is True or before == ok

    @property
    def records_complete(self) -> bool:
        total = self.counts.total
        return total is not None and self.seen.has_all_below(total)

    @property
    def ready_to_complete(self) -> bool:
        """Every record has a line and every planned file a result; not yet marked done."""
        return not self.completed and self.records_complete and not self._files.pending

    @property
    def status(self) -> Status:
        if self.completed:
            return "complete"
        return "ready" if self.ready_to_complete else "open"

    def missing_seqs(self) -> Iterator[int]:
        """Seqs below the total without an entry (all of them before the manifest is known)."""
        return self.seen.missing_below(self.counts.total or 0)

    def pending_downloads(self) -> set[str]:
        """Planned local file names that have no result yet."""
        return set(self._files.pending)

    # --- counting (shared by load and the writer) ---------------------------------
    def _count_entry(self, seq: int, ok: bool, files: list[str]) -> bool:
        """Count an entry; False for a duplicate. A success replaces a failure."""
        c = self.counts
        if seq in self.seen:
            if not (ok and seq in self.failed):
                c.duplicates += 1
                return False
            self.failed.discard(seq)
            c.failed -= 1
            c.ok += 1
            c.replaced += 1
            self._plan(files)
            return True
        self.seen.add(seq)
        c.done += 1
        if ok:
            c.ok += 1
        else:
            c.failed += 1
            self.failed.add(seq)
        self._plan(files)
        return True

    def _count_usage(self, usage: dict[str, Any]) -> None:
        counted = read_usage(usage)
        if counted is not None:
            self.usage.add(counted)

    def _plan(self, files: list[str]) -> None:
        f = self._files
        for name in files:
            if name in f.planned:
                continue
            f.planned.add(name)
            self.counts.downloads_planned += 1
            outcome = f.outcome.get(name)
            if outcome is None:
                f.pending.add(name)
            elif outcome:
                self.counts.downloads_ok += 1
            else:
                self.counts.downloads_failed += 1

    def _count_download(self, local: str, ok: bool) -> bool:
        """Count a download result; False when it adds nothing (a repeat, or a failure
        after a success)."""
        f = self._files
        before = f.outcome.get(local)
        if before is True or before == ok:
            return False
        f.outcome[local] = ok
        if local in f.planned:
            c = self.counts
            if before is None:
                f.pending.discard(local)
            else:  # failed earlier, fetched now (a reconcile or a retried job)
                c.downloads_failed -= 1
            if ok:
                c.downloads_ok += 1
            else:
                c.downloads_failed += 1
        return True
