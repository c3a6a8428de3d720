"""The batch ledger's writer: appends results and download rows concurrently, each
fsynced before its caller is told (and FINs), and counts them once on disk.

Several handlers may write at once: entries of one call go out in one write and
one fsync; a seq (or file) being written by one call is waited for, not written
again, by another. Writes are shielded: a handler cancelled at shutdown must not
leave lines on disk that were never counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    BatchManifest,
    DeadLetter,
    DownloadResult,
    Reject,
    ResultMessage,
    UsageLine,
)
from gpt4batch.common.usage import usage_of
from gpt4batch.services.sink import metrics
from gpt4batch.services.sink.appender import Fsync, SyncedAppender
from gpt4batch.services.sink.ledger.dead_letter import failed_download, failed_result
from gpt4batch.services.sink.ledger.files import LedgerPaths, journal_batch, write_atomically
from gpt4batch.services.sink.ledger.journal import entry_line, usage_entry
from gpt4batch.services.sink.ledger.read import LedgerReader

if TYPE_CHECKING:
    from gpt4batch.services.sink.arrival import ArrivalOutput

log = get_logger("gpt4batch.sink")


class BatchLedger(LedgerReader):
    """One batch's ledger; `load()` rebuilds it from its files (blocking)."""

    def __init__(
        self,
        out: Path,
        batch: str,
        *,
        every: int = 500,
        interval: float = 0.05,
        fsync: Fsync = os.fsync,
        arrival: ArrivalOutput | None = None,
    ) -> None:
        super().__init__(out, batch, fsync=fsync)
        self.arrival = arrival
        """The output in arrival order while the batch is open (None: only at completion)."""
        self.complete_lock = asyncio.Lock()
        self._writing: dict[tuple[str, object], asyncio.Task[Any]] = {}
        self._journal = SyncedAppender(
            self.journal_path, every=every, interval=interval, fsync=fsync
        )
        self._rejects = SyncedAppender(
            self.rejects_path, every=every, interval=interval, fsync=fsync
        )
        self._downloads = SyncedAppender(
            self.downloads_path, every=every, interval=interval, fsync=fsync
        )

    def load(self, *, repair: bool = True) -> BatchLedger:
        super().load(repair=repair)
        return self

    # --- appending ------------------------------------------------------------------
    async def add_result(self, msg: ResultMessage) -> bool:
        """`add_results` of one message."""
        return (await self.add_results([msg]))[0]

    async def add_results(self, msgs: list[ResultMessage]) -> list[bool]:
        """Append the messages' entries in one write and one fsync (then their reject rows);
        for each message, whether it added something (False: a duplicate).

        Returns once the entries are fsynced (the caller FINs then). A success for a
        seq that failed replaces it (`ingest --fix`, reconcile). Of several messages
        for one seq in `msgs`, the first success (else the first) is written.
        """
        added = [False] * len(msgs)
        chosen: dict[int, int] = {}  # seq → index of the message written for it
        busy: list[asyncio.Task[Any]] = []
        for i, msg in enumerate(msgs):
            seq = msg.seq
            ok = msg.record.iErr is None
            if self.is_duplicate(seq, ok):
                self._duplicate()
                continue
            writing = self._writing.get(("seq", seq))
            if writing is not None:  # an earlier call is writing this seq: wait for it
                busy.append(writing)
                continue
            first = chosen.get(seq)
            if first is None:
                chosen[seq] = i
                continue
            self._duplicate()
            if ok and msgs[first].record.iErr is not None:
                chosen[seq] = i
        if chosen:
            order = list(chosen.values())
            task = asyncio.get_running_loop().create_task(
                self._write_results([msgs[i] for i in order])
            )
            keys: list[tuple[str, object]] = [("seq", seq) for seq in chosen]
            for key in keys:
                self._writing[key] = task
            task.add_done_callback(lambda done: self._release(keys, done))
            for i, was_added in zip(order, await asyncio.shield(task), strict=True):
                added[i] = was_added
        for writing in busy:
            await asyncio.shield(writing)
        return added

    def _duplicate(self) -> None:
        self.counts.duplicates += 1
        metrics.DUPLICATES.labels("output").inc()

    def _release(self, keys: list[tuple[str, object]], task: asyncio.Task[Any]) -> None:
        for key in keys:
            if self._writing.get(key) is task:
                del self._writing[key]

    async def _write_results(self, msgs: list[ResultMessage]) -> list[bool]:
        lines: list[bytes] = []
        entries: list[tuple[int, bool, list[str], bytes]] = []
        paid: list[UsageLine | None] = []
        for msg in msgs:
            ok = msg.record.iErr is None
            # Only what the caller planned: a record passed through by `--fix` or
            # dead-lettered carries an earlier run's `spec_downloads`, which no downloader
            # of this batch will fetch (planning them kept `run -f` waiting forever).
            files = list(msg.planned_downloads)
            record = msg.record_json()
            usage = msg.usage
            paid.append(usage)
            journaled = None if usage is None else usage_entry(usage)
            lines.append(entry_line(msg.seq, ok, record, files, journaled))
            entries.append((msg.seq, ok, files, record))
        await self._journal.write_now(b"".join(lines))
        added = [self._count_entry(seq, ok, files) for seq, ok, files, _ in entries]
        for usage, was_added in zip(paid, added, strict=True):
            if was_added and usage is not None:
                self.usage.add(usage_of(usage))
        if self.arrival is not None:
            self.arrival.append([e[3] for e, new in zip(entries, added, strict=True) if new])
        written = added.count(True)
        if written:
            metrics.LINES_WRITTEN.labels("output").inc(written)
            metrics.BATCH_GAUGES.written(self.batch, self.counts.done)
        rows: dict[int, Reject] = {}
        for msg, was_added in zip(msgs, added, strict=True):
            reject = msg.reject
            if was_added and reject is not None and reject.line not in self.reject_rows:
                rows.setdefault(reject.line, reject)
        if rows:
            data = b"".join((row.model_dump_json() + "\n").encode() for row in rows.values())
            await self._rejects.write_now(data)
            self.reject_rows.update(rows)
            metrics.LINES_WRITTEN.labels("rejects").inc(len(rows))
        return added

    async def add_download(self, msg: DownloadResult) -> bool:
        """Append a DownloadResult row; False when this file already has this outcome
        (or was fetched)."""
        if self.download_adds_nothing(msg.local, msg.ok):
            metrics.DUPLICATES.labels("downloads").inc()
            return False
        return await self._once(("file", msg.local), self._write_download(msg))

    async def _write_download(self, msg: DownloadResult) -> bool:
        await self._downloads.submit((msg.model_dump_json() + "\n").encode())
        metrics.LINES_WRITTEN.labels("downloads").inc()
        return self._count_download(msg.local, msg.ok)

    async def add_dead_letter(self, letter: DeadLetter, body: dict[str, Any]) -> bool:
        """A dead-lettered message's failed line or row (`dead_letter.py`); False when
        it owes this batch nothing more."""
        row = failed_download(self.batch, letter, body)
        if row is not None:
            return await self.add_download(row)
        failed = failed_result(self.batch, letter, body)
        if failed is None or failed.seq in self.seen:
            return False
        log.error("record dead-lettered", batch=self.batch, seq=failed.seq, id=failed.record.id)
        return await self.add_result(failed)

    async def _once(self, key: tuple[str, object], write: Coroutine[Any, Any, bool]) -> bool:
        """Run `write` unless the same key is being written (then wait for that one)."""
        task = self._writing.get(key)
        if task is not None:
            write.close()
            await asyncio.shield(task)
            return False
        task = asyncio.get_running_loop().create_task(write)
        self._writing[key] = task
        task.add_done_callback(lambda _: self._writing.pop(key, None))
        return await asyncio.shield(task)

    # --- batch bookkeeping ------------------------------------------------------------
    async def set_manifest(self, manifest: BatchManifest) -> None:
        """Persist the manifest (atomically, fsynced) so a restart still knows the total."""
        if self.manifest != manifest:
            data = manifest.model_dump_json().encode()
            await asyncio.to_thread(write_atomically, self.manifest_path, data, self._fsync)
            self.manifest = manifest
        self.counts.total = manifest.total
        metrics.BATCH_GAUGES.total(manifest.batch, manifest.total)

    async def write_done(self) -> None:
        """The completion marker (atomically); only once `ready_to_complete`."""
        c = self.counts
        marker = {
            "batch": self.batch,
            "total": c.total,
            "written": c.done,
            "ok": c.ok,
            "failed": c.failed,
            "downloads": c.downloads_planned,
            "downloads_failed": c.downloads_failed,
            "usage": self.usage.as_dict(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = (json.dumps(marker) + "\n").encode()
        await asyncio.to_thread(write_atomically, self.done_path, data, self._fsync)
        self.completed = True

    async def reopen(self) -> None:
        """A replacement arrived after completion: the output must be written again."""
        if self.completed:
            await asyncio.to_thread(self.done_path.unlink, True)
            self.completed = False

    async def close(self) -> None:
        for appender in (self._journal, self._rejects, self._downloads):
            await appender.close()
        if self.arrival is not None:
            self.arrival.close()


def read_ledger(out: Path, batch: str | None = None) -> BatchLedger:
    """The ledger of the batch whose output is `out`, read without writing anything."""
    batch = batch or journal_batch(out)
    if batch is None:
        manifest = LedgerPaths(out).manifest
        if not manifest.exists():
            raise FileNotFoundError(f"no batch ledger beside {out}")
        batch = BatchManifest.model_validate_json(manifest.read_bytes()).batch
    return BatchLedger(out, batch).load(repair=False)
