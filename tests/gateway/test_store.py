"""The gateway's store across the upgrade that gave files and batches an owner."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gpt4batch.services.gateway.store import Store
from gpt4batch.services.gateway.tenants import owner_of


def test_rows_from_before_owners_belong_to_no_key(tmp_path: Path) -> None:
    old = sqlite3.connect(tmp_path / "gateway.sqlite3")
    old.executescript(
        "CREATE TABLE files (id TEXT PRIMARY KEY, filename TEXT NOT NULL, purpose TEXT NOT "
        "NULL, bytes INTEGER NOT NULL, created_at INTEGER NOT NULL);"
        "CREATE TABLE batches (seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,"
        " doc TEXT NOT NULL);"
        "INSERT INTO files VALUES ('file-000000000000000000000001', 'a.jsonl', 'batch', 3, 1);"
    )
    old.commit()
    old.close()
    (tmp_path / "files").mkdir()
    (tmp_path / "files" / ".upload-cut.tmp").write_bytes(b"half an upload")

    store = Store(tmp_path)

    assert store.unowned() == (1, 0)
    alice = owner_of("sk-alice")
    assert store.get_file("file-000000000000000000000001", alice) is None
    assert store.list_files(alice) == []
    assert not (tmp_path / "files" / ".upload-cut.tmp").exists()
    spooled = store.spool_path()
    spooled.write_bytes(b"new")
    mine = store.add_file("b.jsonl", "batch", spooled, alice)
    assert store.get_file(mine.id, alice) == mine
    assert store.get_file(mine.id, owner_of("sk-bob")) is None
    store.close()
