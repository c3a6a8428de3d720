"""Reconcile a batch after nsqd lost messages: republish exactly what its ledger still owes.

nsqd killed with `kill -9` loses what it had not synced to disk and every
deferred (delayed-requeue) message (docs/reliability.md). The sink's ledger
knows what arrived; the manifest knows the input (its final location and its
sha256). Reconcile

1. waits until nsqd holds nothing for the batch's consumers (`idle`), so a
   message still queued or in flight is not published a second time;
2. republishes the records without an output line (through ingest's own
   encoder, so a refused line is refused the same way) and the manifest;
3. republishes a DownloadJob for every planned file without a result, and —
   given the download folder — for every fetched file that is missing on disk
   or does not match its row (size, sha256).

Nothing already in the output is run again, so nothing already paid for is
paid twice. The sink then completes the batch (`.done`) by its counts.

It joins ingest (the encoder, the input reader) and the sink's ledger, so it lives in
neither package: services.sink does not import services.ingest, nor the other way round.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.common.bus import Bus
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import DownloadJob, Record
from gpt4batch.common.topics import Channels
from gpt4batch.services.ingest.ingest import ingest
from gpt4batch.services.ingest.reader import file_sha256, open_input, read_lines
from gpt4batch.services.sink.index import iter_lines, json_object
from gpt4batch.services.sink.ledger import BatchLedger, parse_entry, read_ledger

log = get_logger("gpt4batch.reconcile")

MAX_LINE_BYTES = 10 * 1024 * 1024


class ReconcileError(Exception):
    """The batch cannot be reconciled as asked; the message says why (exit 2)."""


@dataclass
class ReconcileReport:
    batch: str
    status_before: str
    total: int = 0
    rounds: int = 0
    records_republished: int = 0
    downloads_republished: int = 0
    files_bad: list[str] = field(default_factory=list)
    """Fetched files missing on disk or not matching their row (re-fetched)."""

    def line(self) -> str:
        return (
            f"reconcile: batch={self.batch} was={self.status_before} total={self.total} "
            f"records_republished={self.records_republished} "
            f"downloads_republished={self.downloads_republished} "
            f"files_bad={len(self.files_bad)} rounds={self.rounds}"
        )


def watched_channels(bus: Bus) -> list[tuple[str, str]]:
    t = bus.topics
    return [
        (t.asks, Channels.CALLER),
        (t.results, Channels.SINK),
        (t.downloads, Channels.DOWNLOADER),
        (t.downloaded, Channels.SINK_DOWNLOADS),
        (t.batches, Channels.SINK),
    ]


async def wait_idle(bus: Bus, timeout: float) -> None:
    """Until the pipeline's channels hold nothing (queued, deferred or in flight)."""
    deadline = time.monotonic() + timeout
    while True:
        backlog = {f"{t}/{c}": await bus.backlog(t, c) for t, c in watched_channels(bus)}
        busy = {k: v for k, v in backlog.items() if v}
        if not busy:
            return
        if time.monotonic() > deadline:
            raise ReconcileError(
                f"the pipeline is still busy after {timeout:g}s ({busy}); let it finish "
                "(are the caller, downloader and sink running?) or raise --wait"
            )
        await asyncio.sleep(0.5)


def planned_jobs(ledger: BatchLedger, wanted: set[str]) -> Iterator[DownloadJob]:
    """DownloadJobs for the planned files in `wanted`, from the records that planned them."""
    for line in iter_lines(ledger.journal_path):
        entry = parse_entry(line)
        if entry is None or not wanted.intersection(entry.files):
            continue
        try:
            record = Record.model_validate_json(entry.record)
        except ValueError:
            continue
        for n, answer in enumerate(record.answers or []):
            ask_id = record.asks[n].id if n < len(record.asks) else f"answer{n}"
            for spec in answer.spec_downloads or []:
                if spec.local in wanted:
                    wanted.discard(spec.local)
                    yield DownloadJob(
                        batch=ledger.batch,
                        record_id=record.id,
                        ask_id=ask_id,
                        url=spec.origin,
                        local=spec.local,
                    )


def bad_files(ledger: BatchLedger, download_dir: Path) -> set[str]:
    """Fetched files (per their row) missing in `download_dir` or not matching size/sha256."""
    bad: set[str] = set()
    for line in iter_lines(ledger.downloads_path):
        row = json_object(line)
        local = row.get("local")
        if row.get("batch") != ledger.batch or row.get("ok") is not True:
            continue
        if not isinstance(local, str):
            continue
        if not file_matches(download_dir / local, row.get("size"), row.get("sha256")):
            bad.add(local)
    return bad


def file_matches(path: Path, size: object, sha256: object) -> bool:
    """`path` is a regular file of `size` bytes whose sha256 is `sha256` (when given)."""
    if not path.is_file() or path.stat().st_size != size:
        return False
    return not sha256 or file_sha256(path) == sha256


async def reconcile(
    bus: Bus,
    out: Path,
    *,
    input_path: Path | None = None,
    download_dir: Path | None = None,
    wait: float = 60.0,
    rounds: int = 3,
) -> ReconcileReport:
    """Republish what the ledger of the batch whose output is `out` still owes.

    With `wait`, it then waits for the pipeline to go idle and checks again, up to
    `rounds` times: an nsqd restarted after `kill -9` can still drop what is written
    to a disk queue whose metadata it lost ("data loss, resetting" in its log).
    """
    report: ReconcileReport | None = None
    for _ in range(max(1, rounds)):
        if wait > 0:
            await wait_idle(bus, wait)
        step = await _reconcile_once(bus, out, input_path, download_dir)
        if report is None:
            report = step
        else:
            report.records_republished += step.records_republished
            report.downloads_republished += step.downloads_republished
            report.files_bad += step.files_bad
        report.rounds += 1
        if wait <= 0 or not (step.records_republished or step.downloads_republished):
            break
    assert report is not None
    return report


async def _reconcile_once(
    bus: Bus, out: Path, input_path: Path | None, download_dir: Path | None
) -> ReconcileReport:
    try:
        ledger = await asyncio.to_thread(read_ledger, out)
    except (FileNotFoundError, ValueError) as exc:
        raise ReconcileError(str(exc)) from None
    report = ReconcileReport(
        batch=ledger.batch, status_before=ledger.status, total=ledger.counts.total or 0
    )
    if ledger.status == "complete" and download_dir is None:
        return report
    manifest = ledger.manifest
    source = input_path or (Path(manifest.input) if manifest and manifest.input else None)
    if source is None:
        raise ReconcileError(
            f"the ledger beside {out} has no manifest naming its input: give --input"
        )
    if not source.is_file():
        raise ReconcileError(f"input {source} does not exist (moved? give --input)")
    if manifest is not None and manifest.input_sha256:
        digest = await asyncio.to_thread(file_sha256, source)
        if digest != manifest.input_sha256:
            raise ReconcileError(
                f"input {source} is not the batch's input (sha256 {digest[:12]}…, "
                f"the manifest says {manifest.input_sha256[:12]}…)"
            )
    if not ledger.records_complete:
        with open_input(str(source)) as opened:
            summary = await ingest(
                read_lines(opened.stream, MAX_LINE_BYTES),
                bus,
                batch=ledger.batch,
                source=opened.name,
                base_dir=opened.base_dir,
                fix=False,
                input_path=str(source),
                input_sha256=manifest.input_sha256 if manifest else None,
                input_size=manifest.input_size if manifest else None,
                max_line_bytes=MAX_LINE_BYTES,
                skip=ledger.is_done,
            )
        report.total = summary.total
        report.records_republished = summary.total - summary.skipped
    wanted = ledger.pending_downloads()
    if download_dir is not None:
        report.files_bad = sorted(await asyncio.to_thread(bad_files, ledger, download_dir))
        for local in report.files_bad:
            (download_dir / local).unlink(missing_ok=True)  # so the downloader fetches it
        wanted |= set(report.files_bad)
    jobs = await asyncio.to_thread(lambda: list(planned_jobs(ledger, set(wanted))))
    if jobs:
        await bus.publish_many(bus.topics.downloads, jobs)
    report.downloads_republished = len(jobs)
    log.info("reconciled", summary=report.line())
    return report
