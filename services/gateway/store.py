"""What the gateway itself keeps under `--data-dir`: files and the batches' API metadata.

    <data-dir>/gateway.sqlite3    files and batches tables (SQLite, WAL, synchronous=FULL)
    <data-dir>/files/<file-id>    the bytes of every uploaded or produced file
    <data-dir>/batches/<batch-id>/asks.jsonl   the converted asks, published in windows
    <data-dir>/ledger/             the batch ledger (results, counts; services/sink)

Every file and batch has an `owner` (services/gateway/tenants.py): each lookup
and listing takes the caller's owner, so another key's rows are not found. Rows
written before owners existed have the owner '' and belong to no key.

A batch's progress (how many results, which failed, whether it is complete)
is not stored here: it is read from the ledger. The batches table holds what
only the API knows: ids, timestamps, metadata, the phase the API reports
(`validating`, …, `cancelled`), validation errors and how far publishing got.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gpt4batch.common.messages import StopReason
from gpt4batch.services.gateway.windows import window_seconds

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    owner TEXT NOT NULL DEFAULT '',
    expires_at INTEGER
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    doc TEXT NOT NULL,
    owner TEXT NOT NULL DEFAULT ''
);
"""
_FILE_COLUMNS = "id, filename, purpose, bytes, created_at, owner, expires_at"

#: The shape of the ids this gateway hands out (`new_id`): anything else is not looked up.
FILE_ID = re.compile(r"file-[0-9a-f]{24}")
BATCH_ID = re.compile(r"batch_[0-9a-f]{24}")


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int
    owner: str = ""
    expires_at: int | None = None  # deleted then (services/gateway/file_expiry.py)

    def api(self) -> dict[str, Any]:
        """The File object of the API."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "expires_at": self.expires_at,
            "status": "processed",
            "status_details": None,
        }


#: A batch still being worked on (its driver runs, its ledger is held).
ACTIVE_STATUSES = frozenset({"validating", "in_progress", "finalizing", "cancelling"})


@dataclass
class BatchRecord:
    """A batch as the API knows it; counts come from the ledger (see batches.py)."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    created_at: int
    metadata: dict[str, str] | None = None
    status: str = "validating"
    format: str = "openai"  # or "gpt4batch": the input file's line shape
    total: int = 0
    published: int = 0  # asks acknowledged by nsqd, in input order
    published_offset: int = 0  # byte offset in asks.jsonl after them
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    expiring_at: int | None = None  # its window passed: draining, then `expired`
    expired_at: int | None = None
    output_expires_after: int | None = None  # seconds its output files are kept
    final_counts: dict[str, int] | None = None
    final_usage: dict[str, Any] | None = None  # the ledger's usage totals, saved at finalize
    owner: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the batch stopped spending (batch_stop.py), if it did: cancelled, or its
        window passed."""
        if self.cancelling_at is not None:
            return "cancelled"
        if self.expiring_at is not None:
            return "expired"
        return None

    @property
    def expires_at(self) -> int:
        return self.created_at + window_seconds(self.completion_window)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_STATUSES


class Store:
    """SQLite metadata plus the file folder; every call is short and synchronous."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.files_dir = data_dir / "files"
        self.batches_dir = data_dir / "batches"
        for folder in (self.files_dir, self.batches_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(data_dir / "gateway.sqlite3", isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.executescript(_SCHEMA)
        for partial in self.files_dir.glob(".upload-*.tmp"):  # uploads cut by a restart
            partial.unlink(missing_ok=True)
        for table in ("files", "batches"):  # a data dir from before owners existed
            columns = {row[1] for row in self.db.execute(f"PRAGMA table_info({table})")}
            if "owner" not in columns:
                self.db.execute(f"ALTER TABLE {table} ADD COLUMN owner TEXT NOT NULL DEFAULT ''")
            if table == "files" and "expires_at" not in columns:  # from before file expiry
                self.db.execute("ALTER TABLE files ADD COLUMN expires_at INTEGER")

    def close(self) -> None:
        self.db.close()

    def unowned(self) -> tuple[int, int]:
        """(files, batches) stored before owners existed: no key sees them."""
        files = self.db.execute("SELECT COUNT(*) FROM files WHERE owner = ''").fetchone()[0]
        batches = self.db.execute("SELECT COUNT(*) FROM batches WHERE owner = ''").fetchone()[0]
        return files, batches

    # --- files ---------------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def spool_path(self) -> Path:
        """A fresh temp file name under files/ for an upload being received."""
        return self.files_dir / f".upload-{secrets.token_hex(8)}.tmp"

    def add_file(
        self,
        filename: str,
        purpose: str,
        written: Path,
        owner: str,
        expires_after: int | None = None,
    ) -> FileRecord:
        """Move a fsynced file (written at `spool_path`) into place and record it as `owner`'s;
        `expires_after` seconds after its creation it is deleted (file_expiry.py)."""
        now = int(time.time())
        expires_at = None if expires_after is None else now + expires_after
        record = FileRecord(new_id("file-"), filename, purpose, 0, now, owner, expires_at)
        target = self.file_path(record.id)
        os.replace(written, target)
        record.bytes = target.stat().st_size
        self.db.execute(
            f"INSERT INTO files ({_FILE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (record.id, filename, purpose, record.bytes, now, owner, expires_at),
        )
        return record

    def get_file(self, file_id: str, owner: str) -> FileRecord | None:
        row = self.db.execute(
            f"SELECT {_FILE_COLUMNS} FROM files WHERE id = ? AND owner = ?", (file_id, owner)
        ).fetchone()
        return FileRecord(*row) if row else None

    def list_files(self, owner: str, purpose: str | None = None) -> list[FileRecord]:
        args: tuple[str, ...]
        sql, args = f"SELECT {_FILE_COLUMNS} FROM files WHERE owner = ?", (owner,)
        if purpose:
            sql, args = sql + " AND purpose = ?", (owner, purpose)
        return [FileRecord(*row) for row in self.db.execute(sql + " ORDER BY created_at", args)]

    def file_ids_of(self, owner: str) -> frozenset[str]:
        rows = self.db.execute("SELECT id FROM files WHERE owner = ?", (owner,))
        return frozenset(row[0] for row in rows)

    def delete_file(self, file_id: str, owner: str) -> bool:
        gone = (
            self.db.execute(
                "DELETE FROM files WHERE id = ? AND owner = ?", (file_id, owner)
            ).rowcount
            > 0
        )
        if gone:
            self.file_path(file_id).unlink(missing_ok=True)
        return gone

    def expired_files(self, now: int) -> list[tuple[str, str]]:
        """(id, owner) of the files whose `expires_at` has passed."""
        rows = self.db.execute(
            "SELECT id, owner FROM files WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)
        )
        return [(row[0], row[1]) for row in rows]

    def next_file_expiry(self) -> int | None:
        """The soonest `expires_at` of any file (None: no file expires)."""
        soonest: int | None = self.db.execute("SELECT MIN(expires_at) FROM files").fetchone()[0]
        return soonest

    # --- batches -----------------------------------------------------------------
    def batch_dir(self, batch_id: str) -> Path:
        return self.batches_dir / batch_id

    def save_batch(self, batch: BatchRecord) -> None:
        doc = json.dumps(asdict(batch))
        self.db.execute(
            "INSERT INTO batches (id, doc, owner) VALUES (?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET doc = excluded.doc",
            (batch.id, doc, batch.owner),
        )

    def get_batch(self, batch_id: str, owner: str | None) -> BatchRecord | None:
        """The batch, if `owner` owns it (None: the gateway's own look-up, any owner)."""
        args: tuple[str, ...]
        sql, args = "SELECT doc FROM batches WHERE id = ?", (batch_id,)
        if owner is not None:
            sql, args = sql + " AND owner = ?", (batch_id, owner)
        row = self.db.execute(sql, args).fetchone()
        return BatchRecord(**json.loads(row[0])) if row else None

    def list_batches(
        self, owner: str, after: str | None, limit: int
    ) -> tuple[list[BatchRecord], bool]:
        """`owner`'s batches, newest first; `after` is the id of the last batch of the
        previous page."""
        bound = None
        if after:
            row = self.db.execute(
                "SELECT seq FROM batches WHERE id = ? AND owner = ?", (after, owner)
            ).fetchone()
            bound = row[0] if row else None
        if bound is None:
            rows = self.db.execute(
                "SELECT doc FROM batches WHERE owner = ? ORDER BY seq DESC LIMIT ?",
                (owner, limit + 1),
            )
        else:
            rows = self.db.execute(
                "SELECT doc FROM batches WHERE owner = ? AND seq < ? ORDER BY seq DESC LIMIT ?",
                (owner, bound, limit + 1),
            )
        found = [BatchRecord(**json.loads(r[0])) for r in rows]
        return found[:limit], len(found) > limit

    def batches(self) -> list[BatchRecord]:
        rows = self.db.execute("SELECT doc FROM batches ORDER BY seq")
        return [BatchRecord(**json.loads(r[0])) for r in rows]
