"""The gateway's view of the batch ledger: the sink's per-batch output and its counts.

The gateway consumes results of its own batches on its own channel and hands
them to the same ledger code the file sink runs (services/sink): fsynced before
FIN, duplicates dropped by id, completion decided by counts (`.done` once the
output holds the manifest's total). Progress (`request_counts`) is read from
that output, never kept a second time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.filenames import sibling
from gpt4batch.common.messages import BatchManifest, DownloadResult, ResultMessage
from gpt4batch.services.sink.sink import Sink


@dataclass
class Counts:
    """Results in the ledger so far: `ok` answered, `failed` with an iErr."""

    offset: int = 0
    ok: int = 0
    failed: int = 0

    @property
    def written(self) -> int:
        return self.ok + self.failed


class Ledger:
    def __init__(self, folder: Path) -> None:
        self.sink = Sink(out_dir=folder)
        self._counts: dict[str, Counts] = {}

    def bind(self, bus: Bus) -> None:
        self.sink.bus = bus

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()

    def path(self, batch: str) -> Path:
        return self.sink.path_for(batch)

    async def announce(self, manifest: BatchManifest) -> None:
        """Tell the ledger how many results make the batch complete."""
        state = await self.sink.output_for(manifest.batch)
        await state.set_manifest(manifest)
        await self.sink.maybe_complete(state)

    async def add_result(self, msg: ResultMessage, delivery: Delivery) -> None:
        await self.sink.handle_result(msg, delivery)

    async def add_download(self, msg: DownloadResult, delivery: Delivery) -> None:
        await self.sink.handle_download(msg, delivery)

    def complete(self, batch: str) -> bool:
        """The ledger decided the batch is complete (every result is written)."""
        return sibling(self.path(batch), "done").exists()

    def counts(self, batch: str) -> Counts:
        """Counts read from the ledger's output, scanning only what was appended since."""
        counts = self._counts.setdefault(batch, Counts())
        path = self.path(batch)
        if not path.exists():
            return counts
        with path.open("rb") as fh:
            fh.seek(counts.offset)
            data = fh.read()
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            if _failed(line):
                counts.failed += 1
            else:
                counts.ok += 1
        counts.offset += end
        return counts

    def records(self, batch: str) -> Iterator[dict[str, Any]]:
        """Every output line of the batch as a dict (blocking; for finalizing)."""
        path = self.path(batch)
        if not path.exists():
            return
        with path.open("rb") as fh:
            for line in fh:
                if line.strip():
                    yield json.loads(line)


def _failed(line: bytes) -> bool:
    if b'"iErr"' not in line:
        return False
    try:
        return json.loads(line).get("iErr") is not None
    except ValueError:
        return True
