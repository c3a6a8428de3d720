"""Rebuilding a batch's ledger from its files: the read side, shared by the writer's start-up.

`load(repair=False)` only reads (safe while a sink appends: a torn last line is
skipped); `repair=True`, for the one writer, also cuts torn tails, moves a
journal of another batch aside, writes the header and restores reject rows a
crash lost between a journal entry and its row.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import BatchManifest, Reject, rejected_line
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.index import iter_lines, json_object, repair_tail
from gpt4batch.services.sink.ledger.counting import LedgerTally
from gpt4batch.services.sink.ledger.files import LedgerPaths, write_atomically
from gpt4batch.services.sink.ledger.journal import header_line, is_header_of, parse_entry

log = get_logger("gpt4batch.sink")


class LedgerReader(LedgerTally):
    """One batch's counts, as its files on disk tell them."""

    def __init__(self, out: Path, batch: str, *, fsync: Fsync = os.fsync) -> None:
        super().__init__()
        self.out = out
        self.batch = batch
        paths = LedgerPaths(out)
        self.journal_path = paths.journal
        self.rejects_path = paths.rejects
        self.downloads_path = paths.downloads
        self.manifest_path = paths.manifest
        self.done_path = paths.done
        self.manifest: BatchManifest | None = None
        self.started: float | None = None
        """Wall time of the batch's first message here (the journal header's `started`)."""
        self.reject_rows: set[int] = set()
        self._fsync = fsync

    def load(self, *, repair: bool = True) -> LedgerReader:
        """Rebuild counts from the files. `repair` (the writer only) cuts torn tails,
        moves a journal of another batch aside, writes the header and restores lost reject rows."""
        if repair:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            for path in (self.journal_path, self.rejects_path, self.downloads_path):
                repair_tail(path)
        for line in iter_lines(self.rejects_path):
            row = json_object(line)
            if isinstance(row.get("line"), int):
                self.reject_rows.add(row["line"])
        lost_rows: list[tuple[int, dict[str, Any]]] = []
        lines = iter_lines(self.journal_path)
        header = json_object(next(lines, b"{}"))
        if self.journal_path.exists() and not is_header_of(header, self.batch):
            if not repair:
                raise ValueError(f"{self.journal_path} is not the ledger of batch {self.batch!r}")
            aside = self.journal_path.with_name(f"{self.journal_path.name}.{int(time.time())}.old")
            os.replace(self.journal_path, aside)
            log.warning("journal of another batch moved aside", path=str(aside))
            lines, header = iter(()), {}
        started = header.get("started")
        if isinstance(started, int | float):
            self.started = float(started)
        elif self.journal_path.exists():  # a header from before `started`: its last write
            self.started = self.journal_path.stat().st_mtime
        for line in lines:
            if not line.endswith(b"\n"):
                break  # a torn tail being written right now (read-only use)
            entry = parse_entry(line)
            if entry is None:
                continue
            counted = self._count_entry(entry.seq, entry.ok, entry.files)
            if counted and entry.usage is not None:
                self._count_usage(entry.usage)
            if counted and not entry.ok:
                refused = rejected_line(json_object(entry.record).get("iErr"))
                if refused is not None and refused not in self.reject_rows:
                    lost_rows.append((refused, json_object(entry.record)))
        for line in iter_lines(self.downloads_path):
            row = json_object(line)
            if row.get("batch") == self.batch and isinstance(row.get("local"), str):
                self._count_download(row["local"], row.get("ok") is True)
        if self.manifest_path.exists():
            self.manifest = BatchManifest.model_validate_json(self.manifest_path.read_bytes())
            self.counts.total = self.manifest.total
        self.completed = self.done_path.exists()
        if repair:
            if not self.journal_path.exists():
                self._write_header()
            self._restore_reject_rows(lost_rows)
        return self

    def _write_header(self) -> None:
        """The journal appears with its header in place (a reader never sees it empty)."""
        self.started = time.time()
        header = header_line(self.batch, self.started).encode()
        write_atomically(self.journal_path, header, self._fsync)

    def _restore_reject_rows(self, missing: list[tuple[int, dict[str, Any]]]) -> None:
        """Rows a crash lost between the journal entry and its reject row (entry goes first)."""
        if not missing:
            return
        with self.rejects_path.open("ab") as fh:
            for number, obj in missing:
                record_id = obj.get("id") if isinstance(obj.get("id"), str) else None
                reason = str((obj.get("iErr") or {}).get("message", "rejected by ingest"))
                row = Reject(line=number, id=record_id, reason=reason)
                fh.write((row.model_dump_json() + "\n").encode())
                self.reject_rows.add(number)
            fh.flush()
            self._fsync(fh.fileno())
        log.warning("restored reject rows lost in a crash", path=str(self.rejects_path))
