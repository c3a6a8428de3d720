"""The sink's handlers: results → output lines, downloads → rows, manifests → completion.

No pynsq here: handlers get messages and publish through a `Bus`, so they run
the same on NSQ and on a `MemoryBus`. A handler returns (→ FIN) only after its
line is fsynced; a write error propagates (→ REQ).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.filenames import safe_component
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import BatchManifest, DownloadResult, ResultMessage
from gpt4batch.services.sink import metrics
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.output import OutputFile

log = get_logger("gpt4batch.sink")

RETRY_COMPLETION_SECONDS = 0.5


def batch_file_stem(batch: str) -> str:
    """The batch id when it is a safe file name, else a safe form plus a hash of the id,
    so that two ids never share a file (`a/x` and `b/x` would both be `x`)."""
    safe = safe_component(batch, "batch")
    if safe == batch:
        return safe
    return f"{safe[:100]}-{hashlib.sha1(batch.encode()).hexdigest()[:8]}"


class Sink:
    """Writes every batch to `out` (one file) or to `<out_dir>/<batch>.jsonl`."""

    def __init__(
        self,
        *,
        out: Path | None = None,
        out_dir: Path | None = None,
        every: int = 500,
        interval: float = 0.05,
        fsync: Fsync = os.fsync,
    ) -> None:
        if (out is None) == (out_dir is None):
            raise ValueError("give exactly one of out or out_dir")
        self.out = out
        self.out_dir = out_dir
        self.every = every
        self.interval = interval
        self.fsync = fsync
        self.bus: Bus | None = None
        self._files: dict[Path, asyncio.Task[OutputFile]] = {}
        self._completer: asyncio.Task[None] | None = None

    def path_for(self, batch: str) -> Path:
        if self.out is not None:
            return self.out
        assert self.out_dir is not None
        return self.out_dir / f"{batch_file_stem(batch)}.jsonl"

    async def output_for(self, batch: str) -> OutputFile:
        """The loaded output file of `batch` (loading it from disk at first use)."""
        path = self.path_for(batch)
        task = self._files.get(path)
        if task is None:
            state = OutputFile(path, every=self.every, interval=self.interval, fsync=self.fsync)
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(state.load))
            self._files[path] = task
        try:
            state = await asyncio.shield(task)
        except Exception:
            if self._files.get(path) is task:
                del self._files[path]  # let the next delivery try again
            raise
        if state.manifest is not None and not state.completed:
            metrics.BATCH_TOTAL.labels(state.manifest.batch).set(state.manifest.total)
            metrics.BATCH_WRITTEN.labels(state.manifest.batch).set(state.written)
        return state

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Load the output(s) now and finish any batch that completed before a crash."""
        if self.out is not None:
            await self.output_for("")
        else:
            assert self.out_dir is not None
            self.out_dir.mkdir(parents=True, exist_ok=True)
            for manifest_path in sorted(self.out_dir.glob("*.manifest.json")):
                done = manifest_path.with_name(manifest_path.name[: -len("manifest.json")] + "done")
                if not done.exists():
                    manifest = BatchManifest.model_validate_json(manifest_path.read_bytes())
                    await self.output_for(manifest.batch)
        self._completer = asyncio.get_running_loop().create_task(self._complete_leftovers())

    async def _complete_leftovers(self) -> None:
        """Retry completion of loaded batches until the bus is bound and publishing works."""
        while True:
            waiting = False
            for task in list(self._files.values()):
                if not task.done() or task.exception() is not None:
                    continue
                state = task.result()
                if not state.ready_to_complete:
                    continue
                try:
                    await self.maybe_complete(state)
                except Exception as exc:
                    waiting = True
                    log.debug("completion not yet possible", path=str(state.out), error=str(exc))
            if not waiting:
                return
            await asyncio.sleep(RETRY_COMPLETION_SECONDS)

    async def close(self) -> None:
        if self._completer is not None:
            self._completer.cancel()
            await asyncio.gather(self._completer, return_exceptions=True)
        for task in list(self._files.values()):
            if task.done() and task.exception() is None:
                await task.result().close()
        self._files.clear()

    # --- handlers ----------------------------------------------------------------
    async def handle_result(self, msg: ResultMessage, delivery: Delivery) -> None:
        state = await self.output_for(msg.batch)
        if not await state.add_result(msg):
            log.debug("duplicate result dropped", batch=msg.batch, id=msg.record.id)
        await self.maybe_complete(state)

    async def handle_download(self, msg: DownloadResult, delivery: Delivery) -> None:
        state = await self.output_for(msg.batch)
        if not await state.add_download(msg):
            log.debug("duplicate download result dropped", batch=msg.batch, local=msg.local)

    async def handle_manifest(self, msg: BatchManifest, delivery: Delivery) -> None:
        if msg.status != "published":
            return  # our own (or another sink's) completion notice
        state = await self.output_for(msg.batch)
        await state.set_manifest(msg)
        log.info("batch announced", batch=msg.batch, total=msg.total, written=state.written)
        await self.maybe_complete(state)

    async def maybe_complete(self, state: OutputFile) -> None:
        """Once the output holds `total` lines: publish `complete`, then write `.done`.

        Publishing first means a crash in between republishes (harmless) rather
        than leaving a `.done` whose notice was never sent.
        """
        if not state.ready_to_complete:
            return
        async with state.complete_lock:
            if not state.ready_to_complete:
                return
            if self.bus is None:
                raise RuntimeError("sink is not bound to a bus yet")
            assert state.manifest is not None
            done = state.manifest.model_copy(update={"status": "complete"})
            await self.bus.publish(self.bus.topics.batches, done)
            await state.write_done()
        metrics.BATCHES_COMPLETED.inc()
        log.info("batch complete", batch=done.batch, total=done.total, written=state.written)
        if self.out_dir is not None:
            await self._forget(state)

    async def _forget(self, state: OutputFile) -> None:
        """Drop a completed batch's in-memory index (a late duplicate reloads it)."""
        task = self._files.get(state.out)
        if task is not None and task.done() and task.result() is state:
            del self._files[state.out]
            await state.close()
