"""The sink's handlers: results, download results, dead letters and manifests → batch ledgers.

No pynsq here: handlers get messages and publish through a `Bus`, so they run
the same on NSQ and on a `MemoryBus`. A handler returns (→ FIN) only after its
ledger line is fsynced; a write error propagates (→ REQ). Each batch has its
own `BatchLedger` (see `ledger/` for the files and how to read them).

Completion is decided here and only here (`maybe_complete`): once a batch's
counts say it is complete (every record has a line, every planned download a
result), its files are closed and its finisher is called, once per completion
(a success replacing a failure afterwards reopens the batch, which then
completes again). The finisher is given by the owner through the constructor:
- the file sink (`gpt4batch sink`, the default `write_files`): the output in
  input order, a `complete` manifest, then `.done` (which a restart reads);
- `gpt4batch run` (`only_batch`): its output beside the input, and the run ends;
- the gateway: the batch to `finalizing`, its driver writes the API's files.
`on_progress` tells the owner that a batch's ledger changed.

A file sink receives every batch on the bus, also those the gateway or `run` finish
themselves: a signed manifest naming another finisher hands the batch over
(`elsewhere.py`), and its messages are then finished unwritten, with no ledger or files.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.errors import Poison
from gpt4batch.common.filenames import safe_component
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    BatchManifest,
    DeadLetter,
    DownloadResult,
    Finishers,
    ResultMessage,
    UsageLine,
)
from gpt4batch.services.sink import metrics
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.arrival import ArrivalOutput
from gpt4batch.services.sink.elsewhere import FILE_NAME, FinishedElsewhere
from gpt4batch.services.sink.ledger import BatchLedger, journal_batch
from gpt4batch.services.sink.ledger.dead_letter import dead_letter_body
from gpt4batch.services.sink.ledger.output import write_output
from gpt4batch.services.sink.pool import LedgerPool, Limits, StaleBatch

log = get_logger("gpt4batch.sink")

RETRY_COMPLETION_SECONDS = 0.5

OnRecord = Callable[[ResultMessage], None]
BatchHook = Callable[[str], None]
#: What is written once a batch is complete (see the module docstring); a failure is
#: retried (the message is requeued, or `start`'s completion of leftovers tries again).
OnComplete = Callable[[BatchLedger], Awaitable[None]]
"""The owner's finisher: called with a batch's ledger once per completion."""


def batch_file_stem(batch: str) -> str:
    """The batch id when it is a safe file name, else a safe form plus a hash of the id,
    so that two ids never share a file (`a/x` and `b/x` would both be `x`)."""
    safe = safe_component(batch, "batch")
    if safe == batch:
        return safe
    return f"{safe[:100]}-{hashlib.sha1(batch.encode()).hexdigest()[:8]}"


def _stem(out: Path) -> str:
    return out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name


class Sink:
    """Keeps every batch's ledger: `<out_dir>/<batch>.jsonl`, or with one file `out`
    the first batch there owns it and any other batch gets `<out stem>.<batch>.jsonl`."""

    def __init__(
        self,
        *,
        out: Path | None = None,
        out_dir: Path | None = None,
        every: int = 500,
        interval: float = 0.05,
        fsync: Fsync = os.fsync,
        only_batch: str | None = None,
        on_record: OnRecord | None = None,
        stream: bool = False,
        limits: Limits | None = None,
        owns: Callable[[str], bool] | None = None,
        on_progress: BatchHook | None = None,
        on_complete: OnComplete | None = None,
    ) -> None:
        if (out is None) == (out_dir is None):
            raise ValueError("give exactly one of out or out_dir")
        self.out = out
        self.out_dir = out_dir
        self.every = every
        self.interval = interval
        self.fsync = fsync
        self.only_batch = only_batch
        self.on_record = on_record
        self.owns = owns
        self.on_progress = on_progress
        self.on_complete: OnComplete = on_complete or self.write_files
        # `.done` records the file sink's completions on disk, so a completed batch is
        # dropped from memory at once. Another finisher's completion is known in memory
        # only: the ledger stays held until idle (the pool's sweep drops it then), or a
        # late copy of a message would load it again and finish it a second time.
        self._forget_completed = on_complete is None
        self.bus: Bus | None = None
        #: The file sink's batches another owner finishes (None: this sink has an owner's
        #: finisher, and `owns`/`only_batch` say what is its own).
        self.elsewhere = (
            FinishedElsewhere(self._elsewhere_path(), fsync=fsync) if on_complete is None else None
        )
        self.stream = stream
        # `run` sinks its own batch only, however long it takes: no age bound there.
        self.limits = limits or (Limits(max_unannounced_age=math.inf) if only_batch else Limits())
        self._owner: str | None = only_batch
        self.pool = LedgerPool(self.path_for, self._load, self.limits, keep=self._is_out)
        self._completer: asyncio.Task[None] | None = None

    def _is_out(self, path: Path) -> bool:
        return path == self.out

    def _elsewhere_path(self) -> Path:
        if self.out_dir is not None:
            return self.out_dir / FILE_NAME
        assert self.out is not None
        return self.out.with_name(f".{_stem(self.out)}{FILE_NAME}")

    def path_for(self, batch: str) -> Path:
        """The output path of `batch` (its ledger files sit beside it)."""
        if self.out_dir is not None:
            return self.out_dir / f"{batch_file_stem(batch)}.jsonl"
        assert self.out is not None
        if self._owner is None:
            self._owner = batch
        if self._owner == batch:
            return self.out
        return self.out.with_name(f"{_stem(self.out)}.{batch_file_stem(batch)}.jsonl")

    async def ledger(self, batch: str) -> BatchLedger:
        """The loaded ledger of `batch` (read from disk at first use)."""
        return await self.pool.get(batch)

    def _load(self, batch: str, path: Path) -> BatchLedger:
        """Blocking: the ledger of `batch` from its files; with `stream`, the output of an
        open batch is made to hold every journal record, in arrival order."""
        arrival = ArrivalOutput(path) if self.stream else None
        ledger = BatchLedger(
            path, batch, every=self.every, interval=self.interval, fsync=self.fsync, arrival=arrival
        ).load()
        if arrival is not None and not ledger.completed:
            arrival.rebuild(ledger.journal_path)
        return ledger

    # --- lifecycle ---------------------------------------------------------------
    async def start(self) -> None:
        """Load unfinished batches now and finish any that completed before a crash."""
        if self.out is not None:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            if self._owner is None:
                self._owner = journal_batch(self.out)
            stem = _stem(self.out)
            manifests = [
                *self.out.parent.glob(f"{glob_escape(stem)}.manifest.json"),
                *self.out.parent.glob(f"{glob_escape(stem)}.*.manifest.json"),
            ]
        else:
            assert self.out_dir is not None
            self.out_dir.mkdir(parents=True, exist_ok=True)
            manifests = list(self.out_dir.glob("*.manifest.json"))
        if self.elsewhere is not None:
            await asyncio.to_thread(self.elsewhere.load)
        for manifest_path in sorted(manifests):
            done = manifest_path.with_name(manifest_path.name[: -len("manifest.json")] + "done")
            if done.exists():
                continue
            manifest = BatchManifest.model_validate_json(manifest_path.read_bytes())
            if not self._foreign(manifest.batch):
                await self.ledger(manifest.batch)
        if self.only_batch is not None:
            await self.ledger(self.only_batch)
        if self.out_dir is not None:
            self.pool.adopt_dropped(self.out_dir)
        self._completer = asyncio.get_running_loop().create_task(self._complete_leftovers())
        self.pool.start()

    async def _complete_leftovers(self) -> None:
        """Retry completion of loaded batches until the bus is bound and publishing works."""
        while True:
            waiting = False
            for ledger in self.pool.loaded():
                try:
                    await self.maybe_complete(ledger)
                except Exception as exc:
                    waiting = True
                    log.debug("completion not yet possible", error=str(exc))
            if not waiting:
                return
            await asyncio.sleep(RETRY_COMPLETION_SECONDS)

    async def close(self) -> None:
        if self._completer is not None:
            self._completer.cancel()
            await asyncio.gather(self._completer, return_exceptions=True)
        await self.pool.close()

    def _foreign(self, batch: str) -> bool:
        """Another run's (or gateway's) message on this one's own channel: a copy, finished
        and ignored; at the file sink, a batch another owner finishes."""
        if self.owns is not None and not self.owns(batch):
            return True
        if self.elsewhere is not None and batch in self.elsewhere:
            return True
        return self.only_batch is not None and batch != self.only_batch

    def skips(self, batch: str, kind: str) -> bool:
        """Whether a message (`kind`: a metric label) of `batch` is not this sink's to
        write: it is finished unwritten, and counted."""
        if not self._foreign(batch):
            return False
        metrics.NOT_OURS.labels(kind).inc()
        return True

    def _progressed(self, batch: str) -> None:
        if self.on_progress is not None:
            self.on_progress(batch)

    # --- handlers ----------------------------------------------------------------
    async def handle_result(self, msg: ResultMessage, delivery: Delivery) -> None:
        if self.skips(msg.batch, "result"):
            return
        self.limits.check_seq(msg.batch, msg.seq)
        async with self.pool.use(msg.batch) as ledger:
            if await ledger.add_result(msg):
                if ledger.completed:  # a success replacing a failure after completion
                    await ledger.reopen()
                if self.on_record is not None:
                    self.on_record(msg)
            await self.maybe_complete(ledger)
        self._progressed(msg.batch)

    async def handle_results(
        self, items: list[tuple[ResultMessage, Delivery]]
    ) -> list[Exception | None]:
        """A group of results (`Bus.subscribe_batches`): one write and one fsync per batch
        ledger for all of them, then each is acknowledged by its outcome."""
        outcomes: list[Exception | None] = [None] * len(items)
        groups: dict[str, list[int]] = {}
        for i, (msg, _) in enumerate(items):
            if self.skips(msg.batch, "result"):
                continue
            try:
                self.limits.check_seq(msg.batch, msg.seq)
            except Poison as exc:
                outcomes[i] = exc
                continue
            groups.setdefault(msg.batch, []).append(i)
        for batch, indexes in groups.items():
            if self._foreign(batch):  # handed over while an earlier group was written
                metrics.NOT_OURS.labels("result").inc(len(indexes))
                continue
            try:
                async with self.pool.use(batch) as ledger:
                    msgs = [items[i][0] for i in indexes]
                    added = await ledger.add_results(msgs)
                    if any(added):
                        if ledger.completed:  # a success replacing a failure after completion
                            await ledger.reopen()
                        if self.on_record is not None:
                            for msg, was_added in zip(msgs, added, strict=True):
                                if was_added:
                                    self.on_record(msg)
                    await self.maybe_complete(ledger)
            except Exception as exc:
                for i in indexes:
                    outcomes[i] = exc
            self._progressed(batch)
        return outcomes

    async def handle_download(self, msg: DownloadResult, delivery: Delivery) -> None:
        if self.skips(msg.batch, "download"):
            return
        async with self.pool.use(msg.batch) as ledger:
            if await ledger.add_download(msg) and ledger.completed:
                await ledger.reopen()  # a file fetched after all (reconcile): rows changed
            await self.maybe_complete(ledger)
        self._progressed(msg.batch)

    async def handle_dead(self, letter: DeadLetter, delivery: Delivery) -> None:
        """A dead-lettered ask, result (or piece of one) or download job still counts (as
        failed)."""
        if self.bus is None:
            return
        topics = self.bus.topics
        if letter.topic not in (topics.asks, topics.results, topics.result_parts, topics.downloads):
            return
        body = dead_letter_body(letter)
        if body is None or self.skips(body["batch"], "dead"):
            return
        seq = body.get("seq")
        if isinstance(seq, int) and seq >= self.limits.max_records:
            return  # its result was refused for the same reason
        try:
            async with self.pool.use(body["batch"]) as ledger:
                await ledger.add_dead_letter(letter, body)
                await self.maybe_complete(ledger)
        except StaleBatch:
            return  # the batch takes nothing more (the letter of its refused result, most likely)
        self._progressed(body["batch"])

    async def handle_manifest(self, msg: BatchManifest, delivery: Delivery) -> None:
        if msg.status != "published":
            return  # our own (or another sink's) completion notice
        if self.elsewhere is not None and msg.finisher != Finishers.FILE_SINK:
            if self.bus is not None and self.bus.signed(self.bus.topics.batches, delivery):
                await self.elsewhere.add(msg.batch, msg.finisher)  # on disk, then its files go
                await self.pool.hand_over(msg.batch)
                return
            metrics.UNSIGNED_CLAIMS.inc()  # the topic is open: anyone could claim a batch
            log.warning(
                "manifest names another finisher but is not signed: the batch is written here",
                batch=msg.batch,
                finisher=msg.finisher,
            )
        if self.skips(msg.batch, "manifest"):
            return
        if msg.total > self.limits.max_records:
            raise Poison(
                f"batch {msg.batch!r} announces {msg.total} records, more than the sink's "
                f"limit of {self.limits.max_records} (--max-batch-records)"
            )
        async with self.pool.use(msg.batch, admit=False) as ledger:
            await ledger.set_manifest(msg)
            c = ledger.counts
            log.info("batch announced", batch=msg.batch, total=msg.total, written=c.done)
            await self.maybe_complete(ledger)
        self._progressed(msg.batch)

    async def maybe_complete(self, ledger: BatchLedger) -> None:
        """The one decision that a batch is complete: once its counts say so, every
        accepted line is put on disk and the finisher is called (once per completion)."""
        if not ledger.ready_to_complete:
            return
        async with ledger.complete_lock:
            if not ledger.ready_to_complete:
                return
            await ledger.close()  # every accepted line is on disk before it is read
            await self.on_complete(ledger)
            ledger.completed = True  # until a replacement reopens it (`.done`: on disk too)
        metrics.BATCHES_COMPLETED.inc()
        c = ledger.counts
        log.info(
            "batch complete",
            batch=ledger.batch,
            total=c.total,
            failed=c.failed,
            downloads=c.downloads_planned,
            downloads_failed=c.downloads_failed,
        )
        if self._forget_completed:
            await self._forget(ledger)

    async def write_files(self, ledger: BatchLedger) -> None:
        """The file sink's finisher: the output in input order, a `complete` notice, then
        `.done` (a crash in between repeats harmless steps)."""
        if self.bus is None:
            raise RuntimeError("sink is not bound to a bus yet")
        assert ledger.manifest is not None
        await asyncio.to_thread(write_output, ledger.journal_path, ledger.out)
        usage = UsageLine.model_validate(ledger.usage.as_dict())
        done = ledger.manifest.model_copy(update={"status": "complete", "usage": usage})
        await self.bus.publish(self.bus.topics.batches, done)
        await ledger.write_done()

    async def _forget(self, ledger: BatchLedger) -> None:
        """Drop a completed batch's in-memory state (a late message reloads it)."""
        if self.pool.forget(ledger):
            await ledger.close()


def glob_escape(text: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", text)
