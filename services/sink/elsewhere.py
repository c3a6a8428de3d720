"""The batches another owner finishes (the gateway, `gpt4batch run`), as a file sink knows them.

Their signed manifest names their finisher (`BatchManifest.finisher`); from then on the
file sink finishes their messages unwritten and keeps no ledger or files for them. So a
restart still knows them, their ids are appended to one file in the sink's folder
(`.finished-elsewhere.jsonl`, one fsynced line each, before the manifest is finished);
batches older than `keep_seconds` are forgotten, and the file is rewritten without them
at start and whenever they are most of it, so it stays as small as the last days' batches.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path

from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.ledger.files import atomic_output

log = get_logger("gpt4batch.sink")

FILE_NAME = ".finished-elsewhere.jsonl"
#: How long a batch handed over is remembered: a message of it arriving later than this
#: (a week after its manifest) is a batch without a manifest again (bounded, see pool.py).
KEEP_SECONDS = 7 * 24 * 3600.0


class FinishedElsewhere:
    """The ids of batches another owner finishes, remembered across restarts."""

    def __init__(
        self, path: Path, *, keep_seconds: float = KEEP_SECONDS, fsync: Fsync = os.fsync
    ) -> None:
        self.path = path
        self.keep_seconds = keep_seconds
        self.fsync = fsync
        self._batches: dict[str, float] = {}  # in the order added: the oldest first
        self._lines = 0  # in the file
        self._lock = asyncio.Lock()

    def __contains__(self, batch: str) -> bool:
        return batch in self._batches

    def load(self) -> None:
        """Blocking: read the file, leaving out (and rewriting without) expired lines."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        oldest = time.time() - self.keep_seconds
        lines = text.splitlines()
        for line in lines:
            try:
                row = json.loads(line)
                batch, at = str(row["batch"]), float(row["at"])
            except (ValueError, KeyError, TypeError):
                continue  # a line torn by a crash: its manifest was not finished, comes again
            if at >= oldest:
                self._batches[batch] = at
        self._lines = len(lines)
        if len(self._batches) < self._lines:
            self._rewrite()

    async def add(self, batch: str, finisher: str) -> None:
        """Remember `batch` (on disk before this returns); once only."""
        async with self._lock:
            if batch in self._batches:
                return
            at = time.time()
            await asyncio.to_thread(self._append, _line(batch, at))
            self._batches[batch] = at
            self._lines += 1
            while next(iter(self._batches.values())) < at - self.keep_seconds:
                del self._batches[next(iter(self._batches))]
            if self._lines > 2 * len(self._batches) + 100:  # mostly forgotten batches
                await asyncio.to_thread(self._rewrite)
        log.info("batch finished elsewhere: its messages are dropped", batch=batch, by=finisher)

    def _rewrite(self) -> None:
        with atomic_output(self.path, self.fsync) as out:
            for batch, at in self._batches.items():
                out.write(_line(batch, at))
        self._lines = len(self._batches)

    def _append(self, line: bytes) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("ab") as fh:
            fh.write(line)
            fh.flush()
            self.fsync(fh.fileno())


def _line(batch: str, at: float) -> bytes:
    return json.dumps({"batch": batch, "at": round(at, 3)}).encode() + b"\n"
