"""The batches a sink holds, and its bounds per unknown batch (issue 18).

Anyone who can publish to nsqd can make up batch ids, and asks are open to
other systems by design, so callers answer made-up batches with genuine
results. Per batch the sink holds a ledger in memory and, while it writes,
open files. The bounds (`Limits`, options of `gpt4batch sink`):

- A batch idle for `idle_seconds` closes its files; they reopen on its next
  message. A completed batch is dropped from memory then (a late message
  loads it again).
- At most `max_unannounced` batches without a manifest are held at once. A
  message of a further one takes the place of the least recently used of them
  that has been idle that long; with none idle, it is requeued, each time
  counting toward the max attempts, and so ends in `…dead` if they stay busy.
  A batch its manifest announced is never refused.
- A batch without a manifest whose first message came more than
  `max_unannounced_age` seconds ago takes no more: its further results are
  dead-lettered with the reason (`StaleBatch`).
- The files of at most `max_dropped_kept` batches without a manifest that gave
  their place are kept on disk; past that the longest-dropped one's files are
  removed (logged). Made-up batch ids cannot fill the disk; a legitimate stream
  publishes a manifest (never removed) or reads results on its own channel.
- No seq at or above `max_records`: the ledger keeps a bit per record.

A batch handed over to its owner (`hand_over`: its signed manifest names the gateway or
`run` as finisher, see elsewhere.py) gives its place at once, and the files it had here
without a manifest are removed.

The per-batch gauges are bounded on their own (`metrics.BatchGauges`, the most
recently active batches): a batch dropped from memory keeps them, so a completed
one shows written = expected on the dashboard and a stalled one stays in view.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.filenames import sibling
from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.ledger import BatchLedger, journal_batch

log = get_logger("gpt4batch.sink")

#: Blocking: the loaded ledger of `batch`, whose output is `path`.
Loader = Callable[[str, Path], BatchLedger]


class StaleBatch(Poison):
    """A result of a batch without a manifest past `--max-manifestless-age`."""


@dataclass(frozen=True)
class Limits:
    idle_seconds: float = 60.0
    max_unannounced: int = 64
    max_unannounced_age: float = 24 * 3600.0
    max_dropped_kept: int = 1000
    max_records: int = 10_000_000

    def check_seq(self, batch: str, seq: int) -> None:
        """Poison for a record position the sink will not keep."""
        if seq >= self.max_records:
            raise Poison(
                f"seq {seq} of batch {batch!r} is beyond the sink's limit of "
                f"{self.max_records} records per batch (--max-batch-records)"
            )


class LedgerPool:
    """The held ledgers by output path: loaded once, closed when idle, bounded."""

    def __init__(
        self,
        path_for: Callable[[str], Path],
        load: Loader,
        limits: Limits,
        keep: Callable[[Path], bool] = lambda path: False,
    ) -> None:
        self.path_for = path_for
        self.load = load
        self.limits = limits
        self.keep = keep
        """Outputs whose files are never removed (the `--out` file), manifest or not."""
        self._tasks: dict[Path, asyncio.Task[BatchLedger]] = {}
        self._dropped: dict[Path, None] = {}  # manifest-less batches that gave their place
        self._used: dict[Path, float] = {}
        self._busy: dict[Path, int] = {}
        self._sweeper: asyncio.Task[None] | None = None

    def loaded(self) -> list[BatchLedger]:
        return [t.result() for t in list(self._tasks.values()) if _loaded(t)]

    async def get(self, batch: str) -> BatchLedger:
        """The loaded ledger of `batch` (read from disk at first use), without limits:
        for announcements and lookups."""
        return await self._get(batch, self.path_for(batch))

    async def _get(self, batch: str, path: Path) -> BatchLedger:
        task = self._tasks.get(path)
        if task is None:
            self._dropped.pop(path, None)  # back: its files are in use again
            task = asyncio.get_running_loop().create_task(asyncio.to_thread(self.load, batch, path))
            self._tasks[path] = task
        self._used[path] = time.monotonic()
        try:
            return await asyncio.shield(task)
        except Exception:
            if self._tasks.get(path) is task:  # let the next delivery try again
                del self._tasks[path]
                self._used.pop(path, None)
            raise

    @asynccontextmanager
    async def use(self, batch: str, *, admit: bool = True) -> AsyncIterator[BatchLedger]:
        """The ledger of `batch` for handling one of its messages (not closed meanwhile);
        `admit`: a batch new to the pool and without a manifest must fit the limits."""
        path = self.path_for(batch)
        if admit and path not in self._tasks and not _announced(path):
            await self._make_room(batch)
        self._busy[path] = self._busy.get(path, 0) + 1
        try:
            ledger = await self._get(batch, path)
            if admit and ledger.manifest is None:
                self._check_age(ledger)
            yield ledger
        finally:
            self._busy[path] -= 1
            if not self._busy[path]:
                del self._busy[path]
            if path in self._tasks:
                self._used[path] = time.monotonic()

    async def _make_room(self, batch: str) -> None:
        """Take the place of an idle batch without a manifest, or Requeue (bounded)."""
        limits = self.limits
        tasks = self._tasks
        waiting = [p for p, t in tasks.items() if not _loaded(t) or t.result().manifest is None]
        if len(waiting) < limits.max_unannounced:
            return
        idle_since = time.monotonic() - limits.idle_seconds
        idle = [
            p
            for p in waiting
            if _loaded(self._tasks[p]) and p not in self._busy and self._used[p] <= idle_since
        ]
        if not idle:
            raise Requeue(
                f"batch {batch!r} has no manifest and {len(waiting)} other batches without one "
                f"are open (--max-batches-without-manifest {limits.max_unannounced}); it gets "
                f"the place of the first to be idle for {limits.idle_seconds:g} s",
                bounded=True,
            )
        oldest = min(idle, key=self._used.__getitem__)
        await self._drop(oldest)
        self._remember_dropped(oldest)

    def _check_age(self, ledger: BatchLedger) -> None:
        """StaleBatch when `ledger` (without a manifest) began too long ago."""
        started, limit = ledger.started, self.limits.max_unannounced_age
        if ledger.completed or started is None or time.time() - started <= limit:
            return
        raise StaleBatch(
            f"batch {ledger.batch!r} has no manifest and its first result came more than "
            f"{limit:g} s ago (--max-manifestless-age): it takes no more results; publish its "
            "manifest, or read results on a channel of your own"
        )

    def adopt_dropped(self, folder: Path) -> None:
        """At start: count the batches without a manifest whose files are in `folder` as
        dropped (the longest unwritten first), so the cap holds across restarts."""
        found: list[tuple[float, Path]] = []
        for journal in folder.glob("*.journal.jsonl"):
            out = journal.with_name(journal.name[: -len(".journal.jsonl")] + ".jsonl")
            batch = journal_batch(out)
            if batch is None or self.path_for(batch) != out or out in self._tasks:
                continue  # not the journal of the batch this output belongs to, or held
            if not _announced(out):
                with suppress(OSError):
                    found.append((journal.stat().st_mtime, out))
        for _, out in sorted(found):
            self._remember_dropped(out)

    def _remember_dropped(self, dropped: Path) -> None:
        """Remember `dropped` (a manifest-less batch that gave its place); past
        `max_dropped_kept`, remove the files of the one dropped longest ago."""
        self._dropped[dropped] = None
        while len(self._dropped) > self.limits.max_dropped_kept:
            oldest = next(iter(self._dropped))
            del self._dropped[oldest]
            if oldest in self._tasks or _announced(oldest) or self.keep(oldest):
                continue  # back in use, or announced since: never removed
            removed = [p for p in _ledger_files(oldest) if _unlink(p)]
            log.warning(
                "removed the files of a batch without a manifest (--max-dropped-manifestless)",
                output=str(oldest),
                files=len(removed),
            )

    def forget(self, ledger: BatchLedger) -> bool:
        """Drop `ledger` (a completed batch) from memory; True if it was held."""
        task = self._tasks.get(ledger.out)
        if task is None or not _loaded(task) or task.result() is not ledger:
            return False
        del self._tasks[ledger.out]
        self._used.pop(ledger.out, None)
        return True

    async def hand_over(self, batch: str) -> None:
        """`batch` is finished elsewhere: forget its ledger and remove the files it left here
        while it had no manifest (Requeue while one of its messages is being written)."""
        path = self.path_for(batch)
        if path in self._busy:
            raise Requeue(f"a message of batch {batch!r} is being written; handed over after it")
        task = self._tasks.pop(path, None)
        self._used.pop(path, None)
        self._dropped.pop(path, None)
        if task is not None:
            with suppress(Exception):  # a ledger that failed to load has nothing open
                ledger = await task
                await ledger.close()
        if _announced(path) or self.keep(path):
            log.warning(
                "batch finished elsewhere has files of its own here: kept", output=str(path)
            )
            return
        if any([_unlink(p) for p in _ledger_files(path)]):
            log.info("removed the files of a batch finished elsewhere", output=str(path))

    async def _drop(self, path: Path) -> None:
        ledger = self._tasks[path].result()
        if self.forget(ledger):
            await ledger.close()

    # --- idle ledgers ------------------------------------------------------------------
    def start(self) -> None:
        if self._sweeper is None:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep_forever())

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(min(10.0, self.limits.idle_seconds / 2))
            try:
                await self.sweep()
            except Exception as exc:  # never stop sweeping
                log.error("closing idle batches failed", error=str(exc))

    async def sweep(self) -> None:
        """Close the files of batches idle for `idle_seconds`; forget completed ones."""
        idle_since = time.monotonic() - self.limits.idle_seconds
        for path, task in list(self._tasks.items()):
            if not _loaded(task) or path in self._busy or self._used.get(path, 0) > idle_since:
                continue
            ledger = task.result()
            if ledger.completed:
                await self._drop(path)
            else:
                await ledger.close()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None
        for ledger in self.loaded():
            await ledger.close()
        self._tasks.clear()
        self._used.clear()


def _loaded(task: asyncio.Task[BatchLedger]) -> bool:
    return task.done() and not task.cancelled() and task.exception() is None


def _ledger_files(out: Path) -> list[Path]:
    """What a batch without a manifest has on disk: its ledger files and arrival output."""
    return [
        sibling(out, name) for name in ("journal.jsonl", "rejects.jsonl", "downloads.jsonl")
    ] + [out]


def _unlink(path: Path) -> bool:
    try:
        path.unlink()
    except OSError:  # gone already, or not ours to remove: counted as kept
        return False
    return True


def _announced(out: Path) -> bool:
    """The batch whose output is `out` has a manifest (or completed) on disk."""
    return sibling(out, "manifest.json").exists() or sibling(out, "done").exists()
