"""The batch ledger: one batch's durable, seq-keyed state, owned by the sink.

Every fact about a batch lives here and nowhere else: which records (by
`seq`, the 0-based position in the input) have a result, which of those
failed, which files their answers planned to download and which of those
have a result, and how many records the batch holds (its manifest). A batch
is complete when every seq below the total has an entry and every planned
download has a result (fetched or failed with a reason) — decided by
counts, never by time or silence.

Files of a batch whose output is `<stem>.jsonl` (all beside it):

    <stem>.journal.jsonl    header {"ledger":2,"batch":…,"started":<unix time of the first
                            message>}, then one entry per result:
                            {"seq":12,"ok":true,"files":["…png"],"usage":{…},"record":{…}}
                            (`usage`: what its calls cost, when a caller made any)
    <stem>.rejects.jsonl    one `Reject` row per refused input line
    <stem>.downloads.jsonl  one `DownloadResult` row per planned file (fetched or failed)
    <stem>.manifest.json    the batch's `BatchManifest` (total, input, its sha256 and location)
    <stem>.done             written only once the batch is complete
    <stem>.jsonl            the output, written in input order at completion

Reading a batch's state (the gateway, `gpt4batch reconcile`, tests) — no
writes, safe while a sink appends:

    from gpt4batch.services.sink.ledger import read_ledger
    state = read_ledger(Path("out/batch-1.jsonl"))     # the batch's output path
    state.counts        # LedgerCounts: total, done, ok, failed, downloads_*…
    state.usage         # UsageTotals: tokens and cost of the batch's calls
    state.status        # "open" | "ready" (complete, output not yet written) | "complete"
    state.is_done(7), state.is_failed(7)
    list(state.missing_seqs()), state.pending_downloads()  # what is still owed

The sink (`services/sink/sink.py`) and `gpt4batch run` (its embedded sink)
write through the same class; `BatchLedger.load()` (which also repairs a torn
last line) must be used by the one writer only.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.filenames import sibling
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    BatchManifest,
    DeadLetter,
    DownloadResult,
    Record,
    Reject,
    ResultMessage,
    UsageLine,
    rejected_line,
)
from gpt4batch.common.seqset import SeqSet
from gpt4batch.common.usage import Usage, UsageTotals, read_usage
from gpt4batch.services.sink import metrics
from gpt4batch.services.sink.appender import Fsync, SyncedAppender
from gpt4batch.services.sink.index import iter_lines, json_object, repair_tail

if TYPE_CHECKING:
    from gpt4batch.services.sink.arrival import ArrivalOutput

log = get_logger("gpt4batch.sink")

LEDGER_VERSION = 2
#: iErr code of a record whose message was dead-lettered (it could never be handled).
DEAD_LETTERED = int(IErrCode.DEAD_LETTERED)
_ENTRY = re.compile(rb'^\{"seq":(\d+),"ok":(true|false),"files":')
_DECODER = json.JSONDecoder()

Status = Literal["open", "ready", "complete"]


def usage_entry(usage: UsageLine) -> bytes:
    """A result's usage as the journal keeps it: its known fields only, one flat object
    (`parse_entry` finds its end at the first closing brace)."""
    return (
        b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"estimated":%s,"cost_usd":%s}'
        % (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            b"true" if usage.estimated else b"false",
            json.dumps(usage.cost_usd).encode(),
        )
    )


def entry_line(
    seq: int,
    ok: bool,
    record_json: str | bytes,
    files: list[str] = (),  # type: ignore[assignment]
    usage: bytes | None = None,
) -> bytes:
    """One journal entry; `usage` (a flat JSON object) is what the result's calls cost."""
    record = record_json.encode() if isinstance(record_json, str) else record_json
    names = json.dumps(list(files), separators=(",", ":")).encode() if files else b"[]"
    paid = b',"usage":' + usage if usage else b""
    return b'{"seq":%d,"ok":%s,"files":%s%s,"record":%s}\n' % (
        seq,
        b"true" if ok else b"false",
        names,
        paid,
        record,
    )


@dataclass(frozen=True)
class Entry:
    seq: int
    ok: bool
    files: list[str]
    record: bytes
    """The output record's JSON, exactly as written."""
    usage: dict[str, Any] | None = None
    """What the result's calls used and cost (None: no call was made for it)."""


_USAGE = b',"usage":'
_RECORD = b',"record":'


def parse_entry(line: bytes) -> Entry | None:
    """A journal entry; None for the header or a line that is not one."""
    match = _ENTRY.match(line)
    if match is None:
        return None
    pos = match.end()
    files: Any = []
    if line.startswith(b"[]", pos):  # most entries: no file names to decode
        pos += 2
    else:
        text = line.decode("utf-8", "surrogateescape")
        try:
            files, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            return None
        if not isinstance(files, list):
            return None
        pos = len(text[:end].encode("utf-8", "surrogateescape"))
    usage = None
    if line.startswith(_USAGE, pos):  # a flat object: it ends at its first brace
        close = line.find(b"}", pos)
        try:
            usage = json.loads(line[pos + len(_USAGE) : close + 1])
        except ValueError:
            return None
        pos = close + 1
    if not line.startswith(_RECORD, pos):
        return None
    stop = line.rstrip().rfind(b"}")
    return Entry(
        int(match.group(1)),
        match.group(2) == b"true",
        files,
        line[pos + len(_RECORD) : stop],
        usage,
    )


@dataclass
class LedgerCounts:
    """A batch's counts. `total` is None until the manifest is known."""

    total: int | None = None
    done: int = 0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    replaced: int = 0
    downloads_planned: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0

    @property
    def downloads_done(self) -> int:
        """Planned files that have a result (fetched or failed)."""
        return self.downloads_ok + self.downloads_failed


@dataclass
class _Files:
    """Planned downloads: which are still owed, and the outcome of every file seen."""

    pending: set[str] = field(default_factory=set)
    planned: set[str] = field(default_factory=set)
    outcome: dict[str, bool] = field(default_factory=dict)
    """local name → fetched (True) / failed (False); a later success wins."""


class BatchLedger:
    """One batch's ledger; `load()` rebuilds it from its files (blocking)."""

    def __init__(
        self,
        out: Path,
        batch: str,
        *,
        every: int = 500,
        interval: float = 0.05,
        fsync: Fsync = os.fsync,
        arrival: ArrivalOutput | None = None,
    ) -> None:
        self.out = out
        self.batch = batch
        self.arrival = arrival
        """The output in arrival order while the batch is open (None: only at completion)."""
        self.journal_path = sibling(out, "journal.jsonl")
        self.rejects_path = sibling(out, "rejects.jsonl")
        self.downloads_path = sibling(out, "downloads.jsonl")
        self.manifest_path = sibling(out, "manifest.json")
        self.done_path = sibling(out, "done")
        self.counts = LedgerCounts()
        self.usage = UsageTotals()
        """What the batch's calls used and cost (results that carried a usage)."""
        self.seen = SeqSet()
        self.failed = SeqSet()
        self.manifest: BatchManifest | None = None
        self.started: float | None = None
        """Wall time of the batch's first message here (the journal header's `started`)."""
        self.completed = False
        self.complete_lock = asyncio.Lock()
        self.reject_rows: set[int] = set()
        self._files = _Files()
        self._fsync = fsync
        self._writing: dict[tuple[str, object], asyncio.Task[Any]] = {}
        self._journal = SyncedAppender(
            self.journal_path, every=every, interval=interval, fsync=fsync
        )
        self._rejects = SyncedAppender(
            self.rejects_path, every=every, interval=interval, fsync=fsync
        )
        self._downloads = SyncedAppender(
            self.downloads_path, every=every, interval=interval, fsync=fsync
        )

    # --- reading ------------------------------------------------------------------
    def load(self, *, repair: bool = True) -> BatchLedger:
        """Rebuild counts from the files. `repair` (the writer only) cuts torn tails,
        moves a journal of another batch aside, writes the header and restores lost reject rows."""
        if repair:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            for path in (self.journal_path, self.rejects_path, self.downloads_path):
                repair_tail(path)
        for line in iter_lines(self.rejects_path):
            row = json_object(line)
            if isinstance(row.get("line"), int):
                self.reject_rows.add(row["line"])
        lost_rows: list[tuple[int, dict[str, Any]]] = []
        lines = iter_lines(self.journal_path)
        header = json_object(next(lines, b"{}"))
        if self.journal_path.exists() and (
            header.get("ledger") != LEDGER_VERSION or header.get("batch") != self.batch
        ):
            if not repair:
                raise ValueError(f"{self.journal_path} is not the ledger of batch {self.batch!r}")
            aside = self.journal_path.with_name(f"{self.journal_path.name}.{int(time.time())}.old")
            os.replace(self.journal_path, aside)
            log.warning("journal of another batch moved aside", path=str(aside))
            lines, header = iter(()), {}
        started = header.get("started")
        if isinstance(started, int | float):
            self.started = float(started)
        elif self.journal_path.exists():  # a header from before `started`: its last write
            self.started = self.journal_path.stat().st_mtime
        for line in lines:
            if not line.endswith(b"\n"):
                break  # a torn tail being written right now (read-only use)
            entry = parse_entry(line)
            if entry is None:
                continue
            counted = self._count_entry(entry.seq, entry.ok, entry.files)
            if counted and entry.usage is not None:
                self._count_usage(entry.usage)
            if counted and not entry.ok:
                refused = rejected_line(json_object(entry.record).get("iErr"))
                if refused is not None and refused not in self.reject_rows:
                    lost_rows.append((refused, json_object(entry.record)))
        for line in iter_lines(self.downloads_path):
            row = json_object(line)
            if row.get("batch") == self.batch and isinstance(row.get("local"), str):
                self._count_download(row["local"], row.get("ok") is True)
        if self.manifest_path.exists():
            self.manifest = BatchManifest.model_validate_json(self.manifest_path.read_bytes())
            self.counts.total = self.manifest.total
        self.completed = self.done_path.exists()
        if repair:
            if not self.journal_path.exists():
                self._write_header()
            self._restore_reject_rows(lost_rows)
        return self

    def _write_header(self) -> None:
        self.started = time.time()
        header = {"ledger": LEDGER_VERSION, "batch": self.batch, "started": self.started}
        with self.journal_path.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(header) + "\n")
            fh.flush()
            self._fsync(fh.fileno())

    def _restore_reject_rows(self, missing: list[tuple[int, dict[str, Any]]]) -> None:
        """Rows a crash lost between the journal entry and its reject row (entry goes first)."""
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

    # --- the queryable state ------------------------------------------------------
    def is_done(self, seq: int) -> bool:
        return seq in self.seen

    def is_failed(self, seq: int) -> bool:
        return seq in self.failed

    @property
    def records_complete(self) -> bool:
        total = self.counts.total
        return total is not None and self.seen.has_all_below(total)

    @property
    def ready_to_complete(self) -> bool:
        """Every record has a line and every planned file a result; not yet marked done."""
        return not self.completed and self.records_complete and not self._files.pending

    @property
    def status(self) -> Status:
        if self.completed:
            return "complete"
        return "ready" if self.ready_to_complete else "open"

    def missing_seqs(self) -> Iterator[int]:
        """Seqs below the total without an entry (all of them before the manifest is known)."""
        return self.seen.missing_below(self.counts.total or 0)

    def pending_downloads(self) -> set[str]:
        """Planned local file names that have no result yet."""
        return set(self._files.pending)

    # --- counting (shared by load and the handlers) -----------------------------
    def _count_entry(self, seq: int, ok: bool, files: list[str]) -> bool:
        """Count an entry; False for a duplicate. A success replaces a failure."""
        c = self.counts
        if seq in self.seen:
            if not (ok and seq in self.failed):
                c.duplicates += 1
                return False
            self.failed.discard(seq)
            c.failed -= 1
            c.ok += 1
            c.replaced += 1
            self._plan(files)
            return True
        self.seen.add(seq)
        c.done += 1
        if ok:
            c.ok += 1
        else:
            c.failed += 1
            self.failed.add(seq)
        self._plan(files)
        return True

    def _count_usage(self, usage: dict[str, Any]) -> None:
        counted = read_usage(usage)
        if counted is not None:
            self.usage.add(counted)

    def _plan(self, files: list[str]) -> None:
        f = self._files
        for name in files:
            if name in f.planned:
                continue
            f.planned.add(name)
            self.counts.downloads_planned += 1
            outcome = f.outcome.get(name)
            if outcome is None:
                f.pending.add(name)
            elif outcome:
                self.counts.downloads_ok += 1
            else:
                self.counts.downloads_failed += 1

    def _count_download(self, local: str, ok: bool) -> bool:
        """Count a download result; False when it adds nothing (a repeat, or a failure
        after a success)."""
        f = self._files
        before = f.outcome.get(local)
        if before is True or before == ok:
            return False
        f.outcome[local] = ok
        if local in f.planned:
            c = self.counts
            if before is None:
                f.pending.discard(local)
            else:  # failed earlier, fetched now (a reconcile or a retried job)
                c.downloads_failed -= 1
            if ok:
                c.downloads_ok += 1
            else:
                c.downloads_failed += 1
        return True

    # --- appending ------------------------------------------------------------------
    async def add_result(self, msg: ResultMessage) -> bool:
        """`add_results` of one message."""
        return (await self.add_results([msg]))[0]

    async def add_results(self, msgs: list[ResultMessage]) -> list[bool]:
        """Append the messages' entries in one write and one fsync (then their reject rows);
        for each message, whether it added something (False: a duplicate).

        Returns once the entries are fsynced (the caller FINs then). A success for a
        seq that failed replaces it (`ingest --fix`, reconcile). Of several messages
        for one seq in `msgs`, the first success (else the first) is written.
        """
        added = [False] * len(msgs)
        chosen: dict[int, int] = {}  # seq → index of the message written for it
        busy: list[asyncio.Task[Any]] = []
        for i, msg in enumerate(msgs):
            seq = msg.seq
            ok = msg.record.iErr is None
            if seq in self.seen and not (ok and seq in self.failed):
                self._duplicate()
                continue
            writing = self._writing.get(("seq", seq))
            if writing is not None:  # an earlier call is writing this seq: wait for it
                busy.append(writing)
                continue
            first = chosen.get(seq)
            if first is None:
                chosen[seq] = i
                continue
            self._duplicate()
            if ok and msgs[first].record.iErr is not None:
                chosen[seq] = i
        if chosen:
            order = list(chosen.values())
            task = asyncio.get_running_loop().create_task(
                self._write_results([msgs[i] for i in order])
            )
            keys: list[tuple[str, object]] = [("seq", seq) for seq in chosen]
            for key in keys:
                self._writing[key] = task
            task.add_done_callback(lambda done: self._release(keys, done))
            # Shielded: a handler cancelled at shutdown must not leave lines on disk
            # that were never counted.
            for i, was_added in zip(order, await asyncio.shield(task), strict=True):
                added[i] = was_added
        for writing in busy:
            await asyncio.shield(writing)
        return added

    def _duplicate(self) -> None:
        self.counts.duplicates += 1
        metrics.DUPLICATES.labels("output").inc()

    def _release(self, keys: list[tuple[str, object]], task: asyncio.Task[Any]) -> None:
        for key in keys:
            if self._writing.get(key) is task:
                del self._writing[key]

    async def _write_results(self, msgs: list[ResultMessage]) -> list[bool]:
        lines: list[bytes] = []
        entries: list[tuple[int, bool, list[str], bytes]] = []
        paid: list[UsageLine | None] = []
        for msg in msgs:
            ok = msg.record.iErr is None
            # Only what the caller planned: a record passed through by `--fix` or
            # dead-lettered carries an earlier run's `spec_downloads`, which no downloader
            # of this batch will fetch (planning them kept `run -f` waiting forever).
            files = list(msg.planned_downloads)
            record = msg.record_json()
            usage = msg.usage
            paid.append(usage)
            journaled = None if usage is None else usage_entry(usage)
            lines.append(entry_line(msg.seq, ok, record, files, journaled))
            entries.append((msg.seq, ok, files, record))
        await self._journal.write_now(b"".join(lines))
        added = [self._count_entry(seq, ok, files) for seq, ok, files, _ in entries]
        for usage, was_added in zip(paid, added, strict=True):
            if was_added and usage is not None:
                self.usage.add(
                    Usage(
                        usage.prompt_tokens,
                        usage.completion_tokens,
                        estimated=usage.estimated,
                        cost_usd=usage.cost_usd,
                    )
                )
        if self.arrival is not None:
            self.arrival.append([e[3] for e, new in zip(entries, added, strict=True) if new])
        written = added.count(True)
        if written:
            metrics.LINES_WRITTEN.labels("output").inc(written)
            metrics.BATCH_GAUGES.written(self.batch, self.counts.done)
        rows: dict[int, Reject] = {}
        for msg, was_added in zip(msgs, added, strict=True):
            reject = msg.reject
            if was_added and reject is not None and reject.line not in self.reject_rows:
                rows.setdefault(reject.line, reject)
        if rows:
            data = b"".join((row.model_dump_json() + "\n").encode() for row in rows.values())
            await self._rejects.write_now(data)
            self.reject_rows.update(rows)
            metrics.LINES_WRITTEN.labels("rejects").inc(len(rows))
        return added

    async def add_download(self, msg: DownloadResult) -> bool:
        """Append a DownloadResult row; False when this file already has this outcome
        (or was fetched)."""
        before = self._files.outcome.get(msg.local)
        if before is True or before == msg.ok:
            metrics.DUPLICATES.labels("downloads").inc()
            return False
        return await self._once(("file", msg.local), self._write_download(msg))

    async def _write_download(self, msg: DownloadResult) -> bool:
        await self._downloads.submit((msg.model_dump_json() + "\n").encode())
        metrics.LINES_WRITTEN.labels("downloads").inc()
        return self._count_download(msg.local, msg.ok)

    async def add_dead_letter(self, letter: DeadLetter, body: dict[str, Any]) -> bool:
        """A dead-lettered ask/result of this batch still gets its (failed) line; a
        dead-lettered download job gets a failed row. Without this the batch would
        wait forever for what never comes."""
        if "url" in body and isinstance(body.get("local"), str):
            row = DownloadResult(
                batch=self.batch,
                record_id=str(body.get("record_id", "")),
                ask_id=str(body.get("ask_id", "")),
                url=str(body["url"]),
                local=body["local"],
                ok=False,
                error=f"dead-lettered: {letter.reason}"[:2000],
            )
            return await self.add_download(row)
        seq, record = body.get("seq"), body.get("record")
        if not isinstance(seq, int) or seq < 0 or seq in self.seen:
            return False
        ierr = {"code": DEAD_LETTERED, "message": f"dead-lettered: {letter.reason}"[:2000]}
        try:
            if not isinstance(record, dict):
                raise ValueError("no record")
            model = Record.model_validate({**record, "iErr": ierr})
        except ValueError:
            rid = record.get("id") if isinstance(record, dict) else body.get("record_id")
            model = Record(id=rid if isinstance(rid, str) else f"seq:{seq}", asks=[], iErr=ierr)
        log.error("record dead-lettered", batch=self.batch, seq=seq, id=model.id)
        return await self.add_result(ResultMessage(batch=self.batch, seq=seq, record=model))

    async def _once(self, key: tuple[str, object], write: Any) -> bool:
        """Run `write` unless the same key is being written (then wait for that one).

        Shielded: a handler cancelled at shutdown must not leave a line on disk
        that was never counted.
        """
        task = self._writing.get(key)
        if task is not None:
            write.close()
            await asyncio.shield(task)
            return False
        task = asyncio.get_running_loop().create_task(write)
        self._writing[key] = task
        task.add_done_callback(lambda _: self._writing.pop(key, None))
        return await asyncio.shield(task)

    # --- batch bookkeeping ------------------------------------------------------------
    async def set_manifest(self, manifest: BatchManifest) -> None:
        """Persist the manifest (atomically, fsynced) so a restart still knows the total."""
        if self.manifest != manifest:
            data = manifest.model_dump_json().encode()
            await asyncio.to_thread(write_atomically, self.manifest_path, data, self._fsync)
            self.manifest = manifest
        self.counts.total = manifest.total
        metrics.BATCH_GAUGES.total(manifest.batch, manifest.total)

    async def write_done(self) -> None:
        """The completion marker (atomically); only once `ready_to_complete`."""
        c = self.counts
        marker = {
            "batch": self.batch,
            "total": c.total,
            "written": c.done,
            "ok": c.ok,
            "failed": c.failed,
            "downloads": c.downloads_planned,
            "downloads_failed": c.downloads_failed,
            "usage": self.usage.as_dict(),
            "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        data = (json.dumps(marker) + "\n").encode()
        await asyncio.to_thread(write_atomically, self.done_path, data, self._fsync)
        self.completed = True

    async def reopen(self) -> None:
        """A replacement arrived after completion: the output must be written again."""
        if self.completed:
            await asyncio.to_thread(self.done_path.unlink, True)
            self.completed = False

    async def close(self) -> None:
        for appender in (self._journal, self._rejects, self._downloads):
            await appender.close()
        if self.arrival is not None:
            self.arrival.close()


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


def journal_batch(out: Path) -> str | None:
    """The batch whose ledger lives beside `out` (from its journal header), if any."""
    for line in iter_lines(sibling(out, "journal.jsonl")):
        batch = json_object(line).get("batch")
        return batch if isinstance(batch, str) else None
    return None


def read_ledger(out: Path, batch: str | None = None) -> BatchLedger:
    """The ledger of the batch whose output is `out`, read without writing anything."""
    batch = batch or journal_batch(out)
    if batch is None:
        manifest = sibling(out, "manifest.json")
        if not manifest.exists():
            raise FileNotFoundError(f"no batch ledger beside {out}")
        batch = BatchManifest.model_validate_json(manifest.read_bytes()).batch
    return BatchLedger(out, batch).load(repair=False)
