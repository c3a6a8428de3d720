"""The gateway's use of the batch ledger (services/sink/ledger/), its one source of state.

The gateway consumes the results, download results and dead letters of its
own batches on its own channel and hands them to the same `Sink` the file sink
runs: each result fsynced before FIN, duplicates dropped by seq, completion
decided by the ledger's counts (every seq has an entry and every planned file
a result), the output written in input order at completion. `request_counts`
and every status decision are read from the ledger's `LedgerCounts`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.filenames import sibling
from gpt4batch.common.messages import BatchManifest, DeadLetter, DownloadResult, ResultMessage
from gpt4batch.common.usage import batch_api_usage
from gpt4batch.services.sink.ledger import LedgerCounts
from gpt4batch.services.sink.ledger.output import sorted_results
from gpt4batch.services.sink.sink import Sink, dead_letter_body


class Ledger:
    def __init__(self, folder: Path) -> None:
        self.sink = Sink(out_dir=folder)

    def bind(self, bus: Bus) -> None:
        self.sink.bus = bus

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()

    async def announce(self, manifest: BatchManifest) -> None:
        """Tell the ledger how many records make the batch."""
        ledger = await self.sink.ledger(manifest.batch)
        await ledger.set_manifest(manifest)
        await self.sink.maybe_complete(ledger)

    async def add_result(self, msg: ResultMessage, delivery: Delivery) -> None:
        await self.sink.handle_result(msg, delivery)

    async def add_download(self, msg: DownloadResult, delivery: Delivery) -> None:
        await self.sink.handle_download(msg, delivery)

    async def add_dead_letter(self, letter: DeadLetter, delivery: Delivery) -> None:
        await self.sink.handle_dead(letter, delivery)

    @staticmethod
    def batch_of(letter: DeadLetter) -> str | None:
        body = dead_letter_body(letter)
        return body["batch"] if body else None

    async def counts(self, batch: str) -> LedgerCounts:
        return (await self.sink.ledger(batch)).counts

    async def complete(self, batch: str) -> bool:
        """The ledger decided the batch is complete (and wrote its output in input order)."""
        return (await self.sink.ledger(batch)).completed

    async def usage(self, batch: str) -> dict[str, Any]:
        """What the batch's calls used and cost: from its `.done` marker once complete (the
        ledger is not loaded again for it), else from its ledger."""
        done = sibling(self.sink.path_for(batch), "done")
        if done.exists():
            marker = json.loads(await asyncio.to_thread(done.read_bytes))
            return batch_api_usage(marker.get("usage") or {})
        return batch_api_usage((await self.sink.ledger(batch)).usage.as_dict())

    def journal(self, batch: str) -> Path:
        """The batch's journal (without loading a finished batch's ledger again)."""
        return sibling(self.sink.path_for(batch), "journal.jsonl")


def records_in_order(journal: Path, scratch: Path) -> Iterator[tuple[bool, bytes]]:
    """(ok, record JSON) per seq in input order, one per seq — also for a batch the
    ledger has not completed (a cancelled one). Blocking."""
    for _, ok, record in sorted_results(journal, scratch):
        yield ok, record
