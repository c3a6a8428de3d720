"""`GET /v1/batches/{id}/partial_output` (extension): the output lines finished so far.

The lines are the batch's successful results in the order they arrived (the
ledger's journal, which is only appended to), each in the output file's line
shape. Line `n` is the n-th success, so a page is addressed by line offset and
a client tails a running batch:

    GET …/partial_output?after=0&limit=1000     → lines 0…, header X-Next-After: 1000
    GET …/partial_output?after=1000             → the lines since, or none yet

Headers: `X-Next-After` (the `after` of the next page), `X-Has-More` (`true`
when more lines are already there than this page held) and `X-Batch-Status`
(the status before the page was read: once it is terminal and `X-Has-More` is
`false`, the client has every line). Memory stays bounded: a page is found by
one scan of its part of the journal (starting from a remembered offset of a
nearby line) and streamed by a second; nothing reads a whole file.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tornado import iostream

from gpt4batch.services.gateway.http_base import ApiError, Base
from gpt4batch.services.gateway.result_lines import output_json
from gpt4batch.services.sink.ledger import LedgerPaths, parse_entry

DEFAULT_LIMIT, MAX_LIMIT = 1000, 10_000
#: Every how many lines an offset is remembered (the most a page scans needlessly).
STRIDE = 1024
#: Batches whose offsets are remembered (the least recently read forgotten first).
BATCHES_REMEMBERED = 256
TERMINAL = ("completed", "failed", "expired", "cancelled")
FLUSH_BYTES = 1 << 16


@dataclass(frozen=True)
class Page:
    start: int  # journal byte offset of the page's first line
    end: int  # journal byte offset after its last line
    lines: int
    has_more: bool


class LineOffsets:
    """Journal byte offsets of some output line numbers of each batch (bounded), so a
    page starting at line n scans from the nearest remembered line at or before n."""

    def __init__(self, batches: int = BATCHES_REMEMBERED) -> None:
        self.batches = batches
        self._known: OrderedDict[str, dict[int, int]] = OrderedDict()
        self._lock = threading.Lock()

    def nearest(self, batch: str, line: int) -> tuple[int, int]:
        """(line, byte offset) remembered at or before `line`; (0, 0) at worst."""
        with self._lock:
            known = self._known.get(batch)
            if not known:
                return 0, 0
            self._known.move_to_end(batch)
            best = max((n for n in known if n <= line), default=0)
            return best, known.get(best, 0)

    def remember(self, batch: str, line: int, offset: int) -> None:
        """`line` successes lie before byte `offset` of `batch`'s journal."""
        with self._lock:  # pages are found in threads
            known = self._known.setdefault(batch, {})
            self._known.move_to_end(batch)
            if line % STRIDE:  # the end of a page, where a tailing client asks next: one kept
                for n in [n for n in known if n % STRIDE]:
                    del known[n]
            known[line] = offset
            while len(self._known) > self.batches:
                self._known.popitem(last=False)


def find_page(journal: Path, batch: str, after: int, limit: int, offsets: LineOffsets) -> Page:
    """Where lines `after` … `after + limit - 1` are in the journal (blocking)."""
    if not journal.exists():
        return Page(0, 0, 0, False)
    line, pos = offsets.nearest(batch, after)  # `line` successes lie before byte `pos`
    start: int | None = None
    lines = 0
    has_more = False
    with journal.open("rb") as fh:
        fh.seek(pos)
        for raw in fh:
            if not raw.endswith(b"\n"):  # a line still being written: not yet
                break
            entry = parse_entry(raw)  # None for the header
            if entry is not None and entry.ok:
                if line >= after + limit:
                    has_more = True
                    break
                if line >= after:
                    start = pos if start is None else start
                    lines += 1
                line += 1
                if line % STRIDE == 0:
                    offsets.remember(batch, line, pos + len(raw))
            pos += len(raw)
    offsets.remember(batch, line, pos)
    return Page(pos if start is None else start, pos, lines, has_more)


class PartialOutputHandler(Base):
    route = "batch_partial_output"

    def initialize(self, offsets: LineOffsets, **kw: object) -> None:  # type: ignore[override]
        super().initialize(**kw)  # type: ignore[arg-type]
        self.offsets = offsets

    async def get(self, batch_id: str) -> None:
        after = self._int_argument("after", 0, 0, None)
        limit = self._int_argument("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        batch = self.batch_or_404(batch_id)
        status = batch.status  # read before the journal: terminal means nothing more comes
        journal = LedgerPaths(self.batches.sink.path_for(batch.id)).journal
        page = await asyncio.to_thread(find_page, journal, batch.id, after, limit, self.offsets)
        self.set_header("Content-Type", "application/jsonl")
        self.set_header("X-Next-After", str(after + page.lines))
        self.set_header("X-Has-More", "true" if page.has_more else "false")
        self.set_header("X-Batch-Status", status)
        if page.lines:
            endpoint = None if batch.format == "gpt4batch" else batch.endpoint
            with journal.open("rb") as fh:
                fh.seek(page.start)
                left = page.end - page.start
                while left > 0:
                    chunk, read = await asyncio.to_thread(_next_chunk, fh, left, batch.id, endpoint)
                    left -= read
                    if chunk:
                        self.write(chunk)
                        try:
                            await self.flush()
                        except iostream.StreamClosedError:
                            return
        self.finish()

    def _int_argument(self, name: str, default: int, low: int, high: int | None) -> int:
        text = self.get_query_argument(name, None)
        if text is None:
            return default
        if not text.isdigit() or int(text) < low or (high is not None and int(text) > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise ApiError(400, f"{name} must be an integer {bound}.", param=name)
        return int(text)


def _next_chunk(fh: BinaryIO, left: int, batch: str, endpoint: str | None) -> tuple[bytes, int]:
    """Output lines from the journal's next lines, about FLUSH_BYTES of them, and how
    many journal bytes they took (blocking); `endpoint` None: gpt4batch records."""
    out: list[bytes] = []
    size = read = 0
    while read < left and size < FLUSH_BYTES:
        raw = fh.readline()
        read += len(raw)
        entry = parse_entry(raw)
        if entry is None or not entry.ok:
            continue
        if endpoint is not None:
            data, _ = output_json(batch, json.loads(entry.record), endpoint)
        else:
            data = entry.record
        out.append(data + b"\n")
        size += len(data) + 1
    return b"".join(out), read
