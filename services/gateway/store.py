"""What the gateway itself keeps under `--data-dir`: files and the batches' API metadata.

    <data-dir>/gateway.sqlite3    files and batches tables (SQLite, WAL, synchronous=FULL)
    <data-dir>/files/<file-id>    the bytes of every uploaded or produced file
    <data-dir>/batches/<batch-id>/asks.jsonl   the converted asks, published in windows
    <data-dir>/ledger/             the batch ledger (results, counts; services/sink)

A batch's progress (how many results, which failed, whether it is complete)
is not stored here: it is read from the ledger. The batches table holds what
only the API knows: ids, timestamps, metadata, the phase the API reports
(`validating`, …, `cancelled`), validation errors and how far publishing got.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY,
    filename TEXT NOT NULL,
    purpose TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    doc TEXT NOT NULL
);
"""


def new_id(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(12)}"


@dataclass
class FileRecord:
    id: str
    filename: str
    purpose: str
    bytes: int
    created_at: int

    def api(self) -> dict[str, Any]:
        """The File object of the API."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.bytes,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
        }


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
    final_counts: dict[str, int] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def expires_at(self) -> int:
        return self.created_at + 24 * 3600

    @property
    def active(self) -> bool:
        return self.status in ("validating", "in_progress", "finalizing", "cancelling")


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

    def close(self) -> None:
        self.db.close()

    # --- files ---------------------------------------------------------------------
    def file_path(self, file_id: str) -> Path:
        return self.files_dir / file_id

    def spool(self, data: bytes) -> Path:
        """Write bytes to a fsynced temp file under files/ (blocking: call it in a thread);
        `add_file` then moves it into place."""
        tmp = self.files_dir / f".upload-{secrets.token_hex(8)}.tmp"
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def add_file(self, filename: str, purpose: str, written: Path) -> FileRecord:
        """Move a fsynced file (see `spool`) into place and record it."""
        record = FileRecord(new_id("file-"), filename, purpose, 0, int(time.time()))
        target = self.file_path(record.id)
        os.replace(written, target)
        record.bytes = target.stat().st_size
        self.db.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
            (record.id, record.filename, record.purpose, record.bytes, record.created_at),
        )
        return record

    def get_file(self, file_id: str) -> FileRecord | None:
        row = self.db.execute("SELECT * FROM files WHERE id = ?", (file_id,)).fetchone()
        return FileRecord(*row) if row else None

    def list_files(self, purpose: str | None = None) -> list[FileRecord]:
        sql, args = "SELECT * FROM files", ()
        if purpose:
            sql, args = sql + " WHERE purpose = ?", (purpose,)
        return [FileRecord(*row) for row in self.db.execute(sql + " ORDER BY created_at", args)]

    def delete_file(self, file_id: str) -> bool:
        gone = self.db.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0
        if gone:
            self.file_path(file_id).unlink(missing_ok=True)
        return gone

    # --- batches -----------------------------------------------------------------
    def batch_dir(self, batch_id: str) -> Path:
        return self.batches_dir / batch_id

    def save_batch(self, batch: BatchRecord) -> None:
        self.db.execute(
            "INSERT INTO batches (id, doc) VALUES (?, ?) ON CONFLICT(id) DO UPDATE SET doc = ?",
            (batch.id, json.dumps(asdict(batch)), json.dumps(asdict(batch))),
        )

    def get_batch(self, batch_id: str) -> BatchRecord | None:
        row = self.db.execute("SELECT doc FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return BatchRecord(**json.loads(row[0])) if row else None

    def list_batches(self, after: str | None, limit: int) -> tuple[list[BatchRecord], bool]:
        """Newest first; `after` is the id of the last batch of the previous page."""
        bound = None
        if after:
            row = self.db.execute("SELECT seq FROM batches WHERE id = ?", (after,)).fetchone()
            bound = row[0] if row else None
        if bound is None:
            rows = self.db.execute(
                "SELECT doc FROM batches ORDER BY seq DESC LIMIT ?", (limit + 1,)
            )
        else:
            rows = self.db.execute(
                "SELECT doc FROM batches WHERE seq < ? ORDER BY seq DESC LIMIT ?",
                (bound, limit + 1),
            )
        found = [BatchRecord(**json.loads(r[0])) for r in rows]
        return found[:limit], len(found) > limit

    def batches(self) -> list[BatchRecord]:
        rows = self.db.execute("SELECT doc FROM batches ORDER BY seq")
        return [BatchRecord(**json.loads(r[0])) for r in rows]
