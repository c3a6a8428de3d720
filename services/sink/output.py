"""One output file and its siblings: dedupe keys, line count, manifest, completion marker.

Files beside `<stem>.jsonl`:
- `<stem>.rejects.jsonl`   one `Reject` per refused input line
- `<stem>.downloads.jsonl` one `DownloadResult` per downloaded (or failed) file
- `<stem>.manifest.json`   the batch's `BatchManifest` (status published)
- `<stem>.done`            written once the output holds `total` lines

Dedupe keys: a record's id; for a refused line (whose id may repeat a valid
record's id) its input line number. Both are rebuilt from the output file
alone (a refused line's iErr names its line), which is written before the
reject row: a crash in between loses nothing, and the row is restored.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from gpt4batch.common.filenames import sibling
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    BatchManifest,
    DownloadResult,
    Reject,
    ResultMessage,
    rejected_line,
)
from gpt4batch.services.sink import metrics
from gpt4batch.services.sink.appender import Fsync, SyncedAppender
from gpt4batch.services.sink.index import iter_lines, json_object, repair_tail

log = get_logger("gpt4batch.sink")


def reject_key(line: int) -> str:
    return f"\x00reject:{line}"


def download_key(result: DownloadResult) -> str:
    return f"{'ok' if result.ok else 'failed'}:{result.local}"


def write_atomically(path: Path, data: bytes, fsync: Fsync = os.fsync) -> None:
    """Write `path` via a temp file + fsync + rename + directory fsync (blocking)."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as fh:
        fh.write(data)
        fh.flush()
        fsync(fh.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        fsync(dir_fd)
    finally:
        os.close(dir_fd)


class OutputFile:
    """The state of one output file; `load()` rebuilds it from disk (blocking)."""

    def __init__(
        self, out: Path, *, every: int = 500, interval: float = 0.05, fsync: Fsync = os.fsync
    ) -> None:
        self.out = out
        self.rejects_path = sibling(out, "rejects.jsonl")
        self.downloads_path = sibling(out, "downloads.jsonl")
        self.manifest_path = sibling(out, "manifest.json")
        self.done_path = sibling(out, "done")
        self.keys: set[str] = set()
        self.reject_rows: set[int] = set()
        self.download_keys: set[str] = set()
        self.written = 0
        self.manifest: BatchManifest | None = None
        self.completed = False
        self.complete_lock = asyncio.Lock()
        self._fsync = fsync
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._output = SyncedAppender(out, every=every, interval=interval, fsync=fsync)
        self._rejects = SyncedAppender(
            self.rejects_path, every=every, interval=interval, fsync=fsync
        )
        self._downloads = SyncedAppender(
            self.downloads_path, every=every, interval=interval, fsync=fsync
        )

    # --- start-up ----------------------------------------------------------------
    def load(self) -> OutputFile:
        """Repair torn tails and rebuild keys and counts from the files (blocking)."""
        self.out.parent.mkdir(parents=True, exist_ok=True)
        for path in (self.out, self.rejects_path, self.downloads_path):
            repair_tail(path)
        for line in iter_lines(self.rejects_path):
            row = json_object(line)
            if isinstance(row.get("line"), int):
                self.reject_rows.add(row["line"])
        missing_rows: list[tuple[int, dict[str, Any]]] = []
        for line in iter_lines(self.out):
            self.written += 1
            obj = json_object(line)
            refused = rejected_line(obj.get("iErr"))
            if refused is not None:  # keyed by its input line: its id may repeat a record's
                self.keys.add(reject_key(refused))
                if refused not in self.reject_rows:
                    missing_rows.append((refused, obj))
            elif isinstance(obj.get("id"), str):
                self.keys.add(obj["id"])
            else:
                log.warning("output line without an id", path=str(self.out), line=self.written)
        self._restore_reject_rows(missing_rows)
        for line in iter_lines(self.downloads_path):
            row = json_object(line)
            if isinstance(row.get("local"), str):
                ok = row.get("ok") is True
                self.download_keys.add(f"{'ok' if ok else 'failed'}:{row['local']}")
        if self.manifest_path.exists():
            self.manifest = BatchManifest.model_validate_json(self.manifest_path.read_bytes())
        self.completed = self.done_path.exists()
        if self.written:
            log.info("resumed output", path=str(self.out), lines=self.written)
        return self

    def _restore_reject_rows(self, missing: list[tuple[int, dict[str, Any]]]) -> None:
        """Rows a crash lost between the output line and its reject row (output goes first)."""
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

    # --- appending ---------------------------------------------------------------
    async def add_result(self, msg: ResultMessage) -> bool:
        """Append the record (and its reject row); False when it is already written."""
        key = reject_key(msg.reject.line) if msg.reject is not None else msg.record.id
        written = await self._once(self.keys, key, lambda: self._write_result(key, msg))
        if written:
            metrics.BATCH_WRITTEN.labels(msg.batch).set(self.written)
        else:
            metrics.DUPLICATES.labels("output").inc()
        return written

    async def _write_result(self, key: str, msg: ResultMessage) -> None:
        """The output line first, then the reject row: the output line is what counts,
        and `load()` restores a reject row a crash lost in between."""
        await self._output.submit((msg.record.to_line() + "\n").encode())
        self.keys.add(key)
        self.written += 1
        metrics.LINES_WRITTEN.labels("output").inc()
        reject = msg.reject
        if reject is not None and reject.line not in self.reject_rows:
            await self._rejects.submit((reject.model_dump_json() + "\n").encode())
            self.reject_rows.add(reject.line)
            metrics.LINES_WRITTEN.labels("rejects").inc()

    async def add_download(self, msg: DownloadResult) -> bool:
        """Append a DownloadResult row; False when one for this file and outcome exists."""
        key = download_key(msg)
        written = await self._once(self.download_keys, key, lambda: self._write_download(key, msg))
        if not written:
            metrics.DUPLICATES.labels("downloads").inc()
        return written

    async def _write_download(self, key: str, msg: DownloadResult) -> None:
        await self._downloads.submit((msg.model_dump_json() + "\n").encode())
        self.download_keys.add(key)
        metrics.LINES_WRITTEN.labels("downloads").inc()

    async def _once(
        self, keys: set[str], key: str, write: Callable[[], Coroutine[Any, Any, None]]
    ) -> bool:
        """Run `write` unless `key` is written or being written (then wait for that one).

        The write runs as its own task and is shielded: a handler cancelled at
        shutdown must not leave a line on disk whose key was never recorded.
        """
        if key in keys:
            return False
        pending_key = f"{id(keys)}:{key}"
        task = self._pending.get(pending_key)
        if task is not None:
            await asyncio.shield(task)
            return False
        task = asyncio.get_running_loop().create_task(write())
        self._pending[pending_key] = task
        task.add_done_callback(lambda _: self._pending.pop(pending_key, None))
        await asyncio.shield(task)
        return True

    # --- batch bookkeeping -------------------------------------------------------
    async def set_manifest(self, manifest: BatchManifest) -> None:
        """Persist the manifest (atomically, fsynced) so a restart still knows the total."""
        if self.manifest is not None and self.manifest.batch != manifest.batch:
            log.warning(
                "another batch's manifest for the same output file; the newer one wins",
                path=str(self.out),
                old=self.manifest.batch,
                new=manifest.batch,
            )
        if self.manifest != manifest:
            data = manifest.model_dump_json().encode()
            await asyncio.to_thread(write_atomically, self.manifest_path, data, self._fsync)
            self.manifest = manifest
        metrics.BATCH_TOTAL.labels(manifest.batch).set(manifest.total)

    @property
    def ready_to_complete(self) -> bool:
        return (
            not self.completed and self.manifest is not None and self.written >= self.manifest.total
        )

    async def write_done(self) -> None:
        assert self.manifest is not None
        if self.written > self.manifest.total:
            log.warning(
                "more output lines than the manifest total",
                path=str(self.out),
                written=self.written,
                total=self.manifest.total,
            )
        marker = {
            "batch": self.manifest.batch,
            "total": self.manifest.total,
            "written": self.written,
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = (json.dumps(marker) + "\n").encode()
        await asyncio.to_thread(write_atomically, self.done_path, data, self._fsync)
        self.completed = True

    async def close(self) -> None:
        for appender in (self._output, self._rejects, self._downloads):
            await appender.close()
