"""The run's durable journal: every result on disk (fsynced) as it arrives, keyed by seq.

`gpt4batch run` must end with the output in input order, yet results arrive
in any order and a crash must lose nothing. So results go to
`<out>.journal.jsonl` first, one line each:

    {"seq":12,"ok":true,"record":{...the output record...}}

after a header line `{"journal":1,"batch":"…","input":"…"}`. The final file
is written from it (see `finalize`). Re-running the same command finds the
journal and skips what it already holds. Duplicates (a redelivered result)
are dropped by seq, with one bit of memory per record.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.errors import Requeue
from gpt4batch.common.filenames import sibling
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    DeadLetter,
    DownloadResult,
    Record,
    ResultMessage,
    ResultPart,
)
from gpt4batch.common.result_parts import PartAssembler
from gpt4batch.services.sink.appender import SyncedAppender
from gpt4batch.services.sink.index import iter_lines, repair_tail

log = get_logger("gpt4batch.run")

JOURNAL_VERSION = 1
#: iErr code of a record whose message could never be handled (see `…dead`).
DEAD_LETTERED = 500
_ENTRY = re.compile(rb'^\{"seq":(\d+),"ok":(true|false),"record":')


class SeqSet:
    """A growable bitmap of the seqs seen (1 bit per record: 125 KB per million)."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def __contains__(self, seq: int) -> bool:
        byte = seq >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (seq & 7)))

    def add(self, seq: int) -> bool:
        """Mark `seq`; False if it was already there."""
        byte = seq >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        mask = 1 << (seq & 7)
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self.count += 1
        return True

    def discard(self, seq: int) -> None:
        if seq in self:
            self._bits[seq >> 3] &= ~(1 << (seq & 7)) & 0xFF
            self.count -= 1


def entry_line(seq: int, ok: bool, record_json: str) -> bytes:
    return b'{"seq":%d,"ok":%s,"record":%s}\n' % (
        seq,
        b"true" if ok else b"false",
        record_json.encode(),
    )


def parse_entry(line: bytes) -> tuple[int, bool, bytes] | None:
    """(seq, ok, record JSON) of a journal line; None for the header or a foreign line."""
    match = _ENTRY.match(line)
    if match is None:
        return None
    start = match.end()
    end = line.rstrip().rfind(b"}")
    return int(match.group(1)), match.group(2) == b"true", line[start:end]


@dataclass
class JournalCounts:
    done: int = 0
    ok: int = 0
    failed: int = 0
    duplicates: int = 0
    downloads_ok: int = 0
    downloads_failed: int = 0


OnRecord = Callable[[ResultMessage], None]


class Journal:
    """Handlers for results and download results of one batch, writing fsynced lines."""

    def __init__(
        self,
        out: Path,
        *,
        batch: str,
        input_path: str,
        every: int = 500,
        interval: float = 0.05,
        on_record: OnRecord | None = None,
    ) -> None:
        self.out = out
        self.path = sibling(out, "journal.jsonl")
        self.batch = batch
        self.input_path = input_path
        self.seen = SeqSet()
        self.counts = JournalCounts()
        self.on_record = on_record
        self._download_keys: set[tuple[bool, str]] = set()
        self._entries = SyncedAppender(self.path, every=every, interval=interval)
        self._rejects = SyncedAppender(
            sibling(out, "rejects.jsonl"), every=every, interval=interval
        )
        self._downloads = SyncedAppender(
            sibling(out, "downloads.jsonl"), every=every, interval=interval
        )

    # --- start-up ----------------------------------------------------------------
    def load(self) -> int:
        """Read an existing journal of this batch (blocking); returns records already done.

        A journal of another batch (another input) is moved aside, never mixed in.
        """
        if not self.path.exists():
            self._write_header()
            return 0
        repair_tail(self.path)
        lines = iter_lines(self.path)
        header = next(lines, b"")
        try:
            meta = json.loads(header)
        except ValueError:
            meta = {}
        if meta.get("journal") != JOURNAL_VERSION or meta.get("batch") != self.batch:
            aside = self.path.with_name(f"{self.path.name}.{int(time.time())}.old")
            os.replace(self.path, aside)
            log.warning("journal of another batch moved aside", path=str(aside))
            self._write_header()
            return 0
        for line in lines:
            entry = parse_entry(line)
            if entry is None:
                continue
            seq, ok, _ = entry
            if self.seen.add(seq):
                self._count(ok)
        downloads = sibling(self.out, "downloads.jsonl")
        if downloads.exists():
            repair_tail(downloads)
            for line in iter_lines(downloads):
                try:
                    row = json.loads(line)
                    self._download_keys.add((bool(row["ok"]), str(row["local"])))
                except (ValueError, KeyError, TypeError):
                    continue
        return self.counts.done

    def _write_header(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        header = {"journal": JOURNAL_VERSION, "batch": self.batch, "input": self.input_path}
        with self.path.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps(header) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _count(self, ok: bool) -> None:
        self.counts.done += 1
        if ok:
            self.counts.ok += 1
        else:
            self.counts.failed += 1

    # --- handlers ------------------------------------------------------------------
    def register(self, bus: Bus, channel: str = "run") -> None:
        bus.subscribe(bus.topics.results, channel, ResultMessage, self.handle_result)
        bus.subscribe(bus.topics.downloaded, channel, DownloadResult, self.handle_download)
        bus.subscribe(bus.topics.dead, channel, DeadLetter, self.handle_dead)
        pieces = PartAssembler(self.handle_result)  # results over one message's size
        bus.subscribe(bus.topics.result_parts, channel, ResultPart, pieces.handle)

    async def handle_result(self, msg: ResultMessage, delivery: Delivery) -> None:
        """Append the result; return (→ FIN) only once it is fsynced."""
        if msg.batch != self.batch:
            # Another run's (on the same topics, with -n): give it back, never drop it.
            raise Requeue(f"result of batch {msg.batch}, not {self.batch}", delay=5)
        await self._append(msg)

    async def handle_dead(self, letter: DeadLetter, delivery: Delivery) -> None:
        """A dead-lettered ask or result of this batch still gets its output line (failed).

        Without this the run would wait forever for a result that never comes.
        """
        try:
            body = json.loads(letter.body or "")
        except (ValueError, RecursionError):
            return
        if not isinstance(body, dict) or body.get("batch") != self.batch:
            return
        seq, record = body.get("seq"), body.get("record")
        if not isinstance(seq, int) or seq < 0 or seq in self.seen:
            return
        if not isinstance(record, dict) or not isinstance(record.get("id"), str):
            record = {"id": f"seq:{seq}", "asks": []}
        record["iErr"] = {"code": DEAD_LETTERED, "message": f"dead-lettered: {letter.reason}"}
        try:
            record_model = Record.model_validate(record)
        except ValueError:
            record_model = Record(id=f"seq:{seq}", asks=[], iErr=record["iErr"])
        log.error("record dead-lettered", seq=seq, id=record_model.id, reason=letter.reason)
        await self._append(ResultMessage(batch=self.batch, seq=seq, record=record_model))

    async def _append(self, msg: ResultMessage) -> None:
        if not self.seen.add(msg.seq):
            self.counts.duplicates += 1
            return
        ok = msg.record.iErr is None
        try:
            await self._entries.submit(entry_line(msg.seq, ok, msg.record.to_line()))
            if msg.reject is not None:
                await self._rejects.submit(msg.reject.model_dump_json().encode() + b"\n")
        except BaseException:
            self.seen.discard(msg.seq)  # not on disk: the redelivery must be taken
            raise
        self._count(ok)
        if self.on_record is not None:
            self.on_record(msg)

    async def handle_download(self, msg: DownloadResult, delivery: Delivery) -> None:
        if msg.batch != self.batch:
            raise Requeue(f"download of batch {msg.batch}, not {self.batch}", delay=5)
        key = (msg.ok, msg.local)
        if key in self._download_keys:  # a redelivery
            return
        self._download_keys.add(key)
        await self._downloads.submit(msg.model_dump_json().encode() + b"\n")
        if msg.ok:
            self.counts.downloads_ok += 1
        else:
            self.counts.downloads_failed += 1

    async def close(self) -> None:
        for appender in (self._entries, self._rejects, self._downloads):
            await appender.close()
