"""The core of ingest: validated lines → AskMessages, refused lines → ResultMessages, a manifest.

No pynsq here: it takes any `Bus`, so `gpt4batch ingest` runs it on NSQ and
the embedded `gpt4batch run` on a MemoryBus. The manifest goes out last, only
after every record's message was acknowledged, so a sink that sees the
manifest knows the whole batch is on the bus.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from gpt4batch.common.authenticator import OVERHEAD as AUTHENTICATOR_OVERHEAD
from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import (
    SCHEMA_VERSION,
    BatchManifest,
    Finishers,
    Record,
    ResultMessage,
)
from gpt4batch.services.ingest import metrics
from gpt4batch.services.ingest.checkpoint import PublishedSeqs
from gpt4batch.services.ingest.publisher import ChunkedPublisher
from gpt4batch.services.ingest.reader import RawLine
from gpt4batch.services.ingest.resume import open_index
from gpt4batch.services.ingest.validate import (
    MIB,
    Accepted,
    Problem,
    Rejected,
    RejectKind,
    Validator,
)

log = get_logger("gpt4batch.ingest")

PROGRESS_EVERY = 1000


@dataclass
class IngestSummary:
    """Counts of one ingest run; `published` grows as nsqd acknowledges."""

    batch: str
    source: str
    total: int = 0
    """Non-blank lines read (= the manifest total = output lines expected)."""
    published: int = 0
    """AskMessages acknowledged by the bus."""
    passed_through: int = 0
    """--fix: already successful records sent straight to results."""
    rejected: int = 0
    skipped: int = 0
    """Lines that already had a result (resumed `gpt4batch run`)."""
    rejected_by_reason: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)

    @property
    def lines_per_second(self) -> float:
        elapsed = self.seconds or (time.monotonic() - self.started)
        return self.total / elapsed if elapsed > 0 else 0.0

    def line(self) -> str:
        """The one-line summary printed at the end."""
        return (
            f"ingest: batch={self.batch} total={self.total} published={self.published} "
            f"passed_through={self.passed_through} rejected={self.rejected} "
            f"seconds={self.seconds:.2f} lines_per_s={self.lines_per_second:.0f}"
        )


ProgressFn = Callable[[IngestSummary], None]


async def ingest(
    lines: Iterable[RawLine] | AsyncIterable[RawLine],
    bus: Bus,
    *,
    batch: str,
    source: str,
    base_dir: Path,
    fix: bool = False,
    input_path: str | None = None,
    input_sha256: str | None = None,
    input_size: int | None = None,
    max_line_bytes: int = 10 * MIB,
    max_file_bytes: int = 100 * MIB,
    publish_batch_size: int = 500,
    max_outstanding: int = 4,
    max_message_bytes: int | None = None,
    progress: ProgressFn | None = None,
    skip: Callable[[int], bool] | None = None,
    published: PublishedSeqs | None = None,
    resume: bool = True,
    off_loop: bool = False,
    finisher: str = Finishers.FILE_SINK,
) -> IngestSummary:
    """Validate and publish every line, then the BatchManifest; returns the counts.

    `lines` are the non-blank lines (see `reader.read_lines`), an iterable or an
    async iterable (`off_loop`: read and validated in a worker thread); `seq` numbers
    them from 0. `base_dir` is where relative image/file paths resolve and is
    carried in each AskMessage. `max_message_bytes` defaults to the bus's
    limit (NsqBus.max_msg_size): a bigger message is rejected, not published.
    `skip(seq)` true means the record already has a result (a resumed `run`):
    it is counted in the total but not validated or published again.
    `published` is ingest's index of the seqs this (batch, input) already
    published: they are skipped the same way and newly acknowledged ones are
    added, so a re-run after a kill publishes only the rest. The index applies
    only while the cluster has a trace of the batch (`resume.open_index`);
    `resume` False starts it afresh. `finisher` (the manifest's) says who writes the
    batch; another than the file sink's is signed, so a file sink leaves the batch alone.
    """
    try:
        BatchManifest(batch=batch, total=0)
    except ValidationError as exc:
        raise ValueError(f"invalid batch id {batch!r}: {exc.errors()[0]['msg']}") from None
    validator = Validator(
        source=source,
        base_dir=base_dir,
        fix=fix,
        max_line_bytes=max_line_bytes,
        max_file_bytes=max_file_bytes,
    )
    on_acked = on_sending = None
    if published is not None:
        resumed = await open_index(bus, published, batch, resume=resume)
        if resumed:
            log.info("resuming: seqs already published are skipped", batch=batch, seqs=resumed)
        index = published

        async def on_acked(seqs: list[int]) -> None:
            await asyncio.to_thread(index.record, seqs)

        async def on_sending(seqs: list[int]) -> None:
            await asyncio.to_thread(index.sending, seqs)

    publisher = ChunkedPublisher(
        bus,
        chunk_size=publish_batch_size,
        max_outstanding=max_outstanding,
        on_acked=on_acked,
        on_sending=on_sending,
    )
    encoder = _Encoder(
        validator,
        batch=batch,
        base_dir=str(base_dir),
        limit=max_message_bytes or getattr(bus, "max_msg_size", None),
        asks_topic=bus.topics.asks,
        results_topic=bus.topics.results,
        republished=published.unacknowledged if published and published.sent.count else None,
    )
    done = _skipped(skip, published)

    summary = IngestSummary(batch=batch, source=source)
    counted = IngestSummary(batch=batch, source=source)
    try:
        async for seq, topic, body, outcome in _encoded(lines, encoder, done, off_loop):
            summary.total += 1
            if outcome is None:
                summary.skipped += 1
                continue
            await publisher.add(topic, body, seq)
            if isinstance(outcome, Rejected):
                summary.rejected += 1
                summary.rejected_by_reason[outcome.kind] += 1
                metrics.REJECTED.labels(outcome.kind.value).inc()
                _log_reject(outcome)
            elif outcome.passthrough:
                summary.passed_through += 1
            if summary.total % PROGRESS_EVERY == 0:
                summary.published = publisher.acked[bus.topics.asks]
                counted = _count(summary, counted)
                if progress is not None:
                    progress(summary)
        await publisher.drain()
    except BaseException:
        await publisher.abort()
        raise
    summary.published = publisher.acked[bus.topics.asks]
    _count(summary, counted)
    manifest = BatchManifest(
        batch=batch,
        total=summary.total,
        input=input_path,
        input_sha256=input_sha256,
        input_size=input_size,
        finisher=finisher,
    )
    await bus.publish(bus.topics.batches, manifest, signed=finisher != Finishers.FILE_SINK)
    summary.seconds = time.monotonic() - summary.started
    if progress is not None:
        progress(summary)
    return summary


#: Lines read and validated per hop to a worker thread.
BATCH_LINES = 256

_Encoded = tuple[int, str, bytes, Accepted | Rejected | None]


def _skipped(
    skip: Callable[[int], bool] | None, published: PublishedSeqs | None
) -> Callable[[int], bool] | None:
    """Which seqs need no publishing: `skip`'s and those an earlier run published.

    Asked once per line, so an index that starts empty (a first run: what this run
    acknowledges lies behind the line being read) is not asked at all.
    """
    earlier = published.seqs if published is not None and published.seqs.count else None
    if earlier is None:
        return skip
    if skip is None:
        return earlier.__contains__
    return lambda seq: skip(seq) or seq in earlier


async def _encoded(
    lines: Iterable[RawLine] | AsyncIterable[RawLine],
    encoder: _Encoder,
    skip: Callable[[int], bool] | None,
    off_loop: bool,
) -> AsyncIterator[_Encoded]:
    """(seq, topic, body, verdict) per line; verdict None for a line `skip` says is done.

    Lines are taken BATCH_LINES at a time and the loop gets a turn between
    batches. `off_loop`: reading, parsing and the stat of referenced files run
    in a worker thread, so a loop shared with the caller and sink (embedded
    `run`) never waits on the disk. Alone (the ingest service) the thread hops
    only cost: GIL hand-offs halve the lines/s (bench/table.py, ingest row).
    """

    async def encode(seq: int, batch: Iterable[RawLine]) -> list[_Encoded]:
        if off_loop:
            return await asyncio.to_thread(_encode_batch, encoder, skip, seq, batch)
        await asyncio.sleep(0)
        return _encode_batch(encoder, skip, seq, batch)

    seq = 0
    if isinstance(lines, AsyncIterable):
        batch: list[RawLine] = []
        async for line in lines:
            batch.append(line)
            if len(batch) >= BATCH_LINES:
                for item in await encode(seq, batch):
                    yield item
                seq += len(batch)
                batch = []
        for item in await encode(seq, batch):
            yield item
        return
    iterator = iter(lines)
    while items := await encode(seq, itertools.islice(iterator, BATCH_LINES)):
        for item in items:
            yield item
        seq += len(items)


def _encode_batch(
    encoder: _Encoder, skip: Callable[[int], bool] | None, seq: int, lines: Iterable[RawLine]
) -> list[_Encoded]:
    out: list[_Encoded] = []
    for number, line in enumerate(lines, start=seq):
        if skip is not None and skip(number):
            encoder.validator.remember(line)
            out.append((number, "", b"", None))
        else:
            out.append((number, *encoder.encode(number, line)))
    return out


def _count(summary: IngestSummary, counted: IngestSummary) -> IngestSummary:
    """Add what happened since the last call to the Prometheus counters (cheaper than per line)."""
    metrics.LINES.inc(summary.total - counted.total)
    metrics.PUBLISHED.labels("ask").inc(summary.published - counted.published)
    metrics.PUBLISHED.labels("passthrough").inc(summary.passed_through - counted.passed_through)
    metrics.PUBLISHED.labels("reject").inc(summary.rejected - counted.rejected)
    counted.total, counted.published = summary.total, summary.published
    counted.passed_through, counted.rejected = summary.passed_through, summary.rejected
    return counted


class _Encoder:
    """Turns a line into (topic, body, verdict), rejecting what would not fit on the bus."""

    def __init__(
        self,
        validator: Validator,
        *,
        batch: str,
        base_dir: str,
        limit: int | None,
        asks_topic: str,
        results_topic: str,
        republished: Callable[[int], bool] | None = None,
    ) -> None:
        self.validator = validator
        self.republished = republished
        """Seqs an earlier run sent unacknowledged: their asks go out marked `republished`."""
        self.batch = batch
        self.base_dir = base_dir
        self.limit = limit
        self.asks_topic = asks_topic
        self.results_topic = results_topic
        self._head = b'{"v":%d,"batch":%s' % (SCHEMA_VERSION, json.dumps(batch).encode())
        self._ask_tail = b',"base_dir":%s}' % json.dumps(base_dir).encode()
        self._again_tail = self._ask_tail[:-1] + b',"republished":true}'

    def encode(self, seq: int, line: RawLine) -> tuple[str, bytes, Accepted | Rejected]:
        verdict = self.validator.check(line)
        if isinstance(verdict, Accepted):
            if verdict.passthrough:
                topic, body = self.results_topic, self._envelope(seq, verdict.json, b"null")
            else:
                again = self.republished is not None and self.republished(seq)
                topic, body = self.asks_topic, self._envelope(seq, verdict.json, again=again)
            if self._fits(body, topic):
                return topic, body, verdict
            reason = (
                f"message of {len(body)} bytes is over the bus limit of {self.limit} bytes "
                "(raise --max-msg-size, and nsqd's --max-msg-size with it)"
            )
            verdict = self.validator.reject(
                line.number,
                verdict.record.model_dump(),
                Problem(RejectKind.MESSAGE_TOO_LARGE, None, reason),
            )
        body = self._result(seq, verdict.output, verdict)
        if not self._fits(body, self.results_topic):
            # Even the refused line is too big to carry: keep only its id and the error.
            slim = Record(id=verdict.output.id, asks=[], answers=None, iErr=verdict.output.iErr)
            body = self._result(seq, slim, verdict)
        return self.results_topic, body, verdict

    def _envelope(
        self, seq: int, record_json: bytes, reject: bytes | None = None, *, again: bool = False
    ) -> bytes:
        """An AskMessage (or, with `reject`, a ResultMessage) body around the record's JSON.

        Splicing the validated input line in keeps the record byte-identical to
        the input and is several times faster than re-serialising the model.
        """
        if reject is not None:
            tail = b',"reject":' + reject + b"}"
        else:
            tail = self._again_tail if again else self._ask_tail
        return b'%s,"seq":%d,"record":%s%s' % (self._head, seq, record_json, tail)

    def _fits(self, body: bytes, topic: str) -> bool:
        """Whether `body` fits the bus limit on `topic`, with room for the authenticator
        the bus adds to a result (common/authenticator.py)."""
        if self.limit is None:
            return True
        room = self.limit - (AUTHENTICATOR_OVERHEAD if topic == self.results_topic else 0)
        return len(body) <= room

    def _result(self, seq: int, record: Record, rejected: Rejected | None = None) -> bytes:
        message = ResultMessage.model_construct(
            batch=self.batch,
            seq=seq,
            record=record,
            reject=rejected.reject if rejected else None,
        )
        return message.model_dump_json().encode()


def _log_reject(rejected: Rejected) -> None:
    r = rejected.reject
    log.warning(
        "line rejected",
        source=r.source,
        line=r.line,
        id=r.id,
        field=r.field,
        reason=r.reason,
        kind=rejected.kind.value,
    )
