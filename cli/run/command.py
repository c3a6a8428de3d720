"""`gpt4batch run` (alias `batchsvc`): the whole pipeline in one command.

Without `-n` the same services as in production (ingest, caller, downloader
and the sink, for this one batch) run in this process over the in-memory bus;
with `-n` they go through NSQ, so caller replicas elsewhere share the work.
The run consumes results on a channel of its own (`run-<hash of the batch>`),
finishes other batches' copies there, and deletes the channel when done.

Life of a run:
1. check options and the token (exit 2 before any work when wrong);
2. load the batch ledger (`<out>.journal.jsonl`, see services/sink/ledger/):
   records it holds are not run again, so a run killed before its summary (kill -9,
   power loss) continues when started again, and says so in one line;
3. ingest publishes the records while the caller works and the embedded sink
   (the same `SinkService` as `gpt4batch sink`, on the run's channel, group
   commit) fsyncs each result into the ledger as it arrives;
4. the run is complete when the sink says so (the ledger's counts: every record
   has a line and every planned download a result): its finisher (`_finish`)
   writes the output in input order from the ledger beside the input, and the
   run ends. On Ctrl-C: stop taking work, let in-flight calls finish for
   `--grace` s and their results reach the ledger, then write the output with
   the records not run marked (the finalizer);
5. a summary, and the resume command if anything failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import os
import sys
import time
from collections.abc import Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import SecretStr

from gpt4batch.cli.run.errors_file import ErrorBreakdown, write_errors
from gpt4batch.cli.run.estimate import print_estimate
from gpt4batch.cli.run.finalize import FinalCounts, write_final
from gpt4batch.cli.run.notices import end_notices, start_notices
from gpt4batch.cli.run.options import RunOptions, parse
from gpt4batch.cli.run.preflight import (
    check_allowed_dirs,
    check_download_dir,
    check_input,
    check_output,
    check_reachable,
    check_upstream,
)
from gpt4batch.cli.run.progress import RunProgress
from gpt4batch.cli.run.report import (
    budget_line,
    continuing_line,
    first_line,
    print_summary,
    refused_line,
)
from gpt4batch.cli.run.side_files import retire_side_files
from gpt4batch.common import logging as glog
from gpt4batch.common.authenticator import from_config as authenticator_from_config
from gpt4batch.common.bus import Bus
from gpt4batch.common.credentials import DEFAULT_CREDENTIALS, warn_secrets_in_argv
from gpt4batch.common.errors import BusConnectError, ConfigError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import (
    IErr,
    ResultMessage,
)
from gpt4batch.common.service import (
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    install_stop_signals,
    run_process,
    start_unless_stopped,
)
from gpt4batch.common.settings import BaseServiceSettings, load
from gpt4batch.services.caller.accounts import pool_source
from gpt4batch.services.caller.auth_gate import AuthGate, token_source
from gpt4batch.services.caller.budget import batch_budget
from gpt4batch.services.caller.limits import Limiter
from gpt4batch.services.caller.service import ANSWERED_MEMORY, CallerService
from gpt4batch.services.caller.settings import CallerSettings
from gpt4batch.services.ingest.batch_id import default_batch_id
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.reader import file_sha256, open_input, read_lines
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import embedded_settings

if TYPE_CHECKING:
    from gpt4batch.services.downloader.service import DownloaderService

MAX_LINE_BYTES = 10 * 1024 * 1024
#: Longest wait, after a stop, for results already published to reach the ledger.
DRAIN_TIMEOUT = 10.0
#: How often `_wait` redraws the progress (completion wakes it at once).
PROGRESS_SECONDS = 0.2

log = glog.get_logger("gpt4batch.run")


@dataclass
class RunResult:
    final: FinalCounts
    seconds: float
    calls: float
    interrupted: bool
    ingest: IngestSummary | None
    errors: ErrorBreakdown
    rate_limited: int = 0


def caller_settings(opts: RunOptions, bus_settings: BaseServiceSettings) -> CallerSettings:
    model = opts.model or ("gpt-4-gizmo" if opts.upstream == "gpt4api" else None)
    values = dict(
        bus_settings.model_dump(),
        upstream=opts.upstream,
        base_url=opts.base_url,
        tier=opts.tier,
        chat_url=opts.chat_url,
        upload_url=opts.upload_url,
        credentials=opts.credentials or DEFAULT_CREDENTIALS,
        model=model,
        gizmo_id=opts.gizmo_id,
        history_and_training_disabled=opts.history_and_training_disabled,
        concurrency=opts.concurrency,
        qps=opts.qps,
        retries=opts.retries,
        read_timeout=opts.read_timeout,
        enable_download=opts.enable_download,
        download_prefix=opts.download_prefix,
        # Asks upload only files in the input's folder and --allowed-dirs (symlinks
        # resolved first).
        allowed_dirs=[str(Path(opts.input).resolve().parent), *opts.allowed_dirs],
        feed=opts.feed and opts.enable_nsq,  # the feed is an NSQ topic: only with -n
        feed_topic=opts.feed_topic,
        feed_dir=str(Path(opts.download_dir or Path(opts.input).parent).resolve()),
        # In-process (no -n) no message can time out, so no conversation deadline.
        conversation_deadline=CallerSettings.model_fields["conversation_deadline"].default
        if opts.enable_nsq
        else 0,
    )
    values.update(opts.extra)  # the generated flags (every other caller setting)
    if opts.access_token:
        values["access_token"] = SecretStr(opts.access_token)
    return load(CallerSettings, **values)


def upstream_hosts(settings: CallerSettings, caller: CallerService | None = None) -> list[str]:
    """`host:port` of each upstream URL the operator configured (none: the public default),
    the accounts' (`--accounts`) included."""
    found = []
    urls = [settings.base_url, settings.chat_url, settings.gizmo_url, settings.upload_url]
    if caller is not None and caller.pool is not None:
        urls += [account.spec.base_url for account in caller.pool.accounts]
    for url in urls:
        if url:
            parts = urlsplit(url)
            host = f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname
            found.append(f"{host}:{parts.port or {'https': 443}.get(parts.scheme, 80)}")
    return found


def fleet_limiter(settings: CallerSettings) -> Limiter:
    """With -n, `--limit-scope fleet` (the default): -q and -g are shared with every caller
    of the limit group, as a caller service does; `process`: this run has them all."""
    from gpt4batch.services.caller.limits.fleet import build_limiter

    return build_limiter(settings)


def run_channel(batch: str) -> str:
    """The run's own channel on the results topics: one per batch, deleted when done."""
    return f"run-{hashlib.sha1(batch.encode()).hexdigest()[:12]}"


def make_bus(opts: RunOptions, settings: BaseServiceSettings) -> Bus:
    if opts.enable_nsq:
        from gpt4batch.common.nsq.bus import NsqBus  # pynsq and tornado only with -n

        # Only the run's own channels: a `sink` channel nobody reads would fill nsqd's disk.
        # Everything runs in this process: a secret of its own unless one is configured.
        secret = authenticator_from_config(settings.bus_secret_file, generate=True)
        return NsqBus(settings, service="run", prepare={}, authenticator=secret)
    # Bounded channels: ingest waits while the caller is busy (flat memory).
    capacity = max(1000, 4 * opts.concurrency)
    return MemoryBus(
        service="run",
        topics=settings.topics,
        channel_capacity=capacity,
        max_msg_size=settings.max_msg_size,  # the same limit as through NSQ
    )


class Run:
    """One batch run; `execute()` returns the counts for the summary."""

    def __init__(self, opts: RunOptions) -> None:
        self.opts = opts
        self.input = Path(opts.input)
        self.out = Path(opts.out)
        check_input(opts.input)
        if self.out.resolve() == self.input.resolve():
            raise ConfigError("-o/--out must differ from -i/--in (the input is read again)")
        check_output(opts.out)
        check_allowed_dirs(opts.allowed_dirs)
        self.batch = opts.batch or default_batch_id(self.input)
        self.bus_settings = load(
            BaseServiceSettings,
            topic_prefix=opts.topic_prefix,
            nsqd_tcp_address=opts.nsqd_tcp_address,
            nsqd_http_address=opts.nsqd_http_address,
            lookupd_http_address=opts.lookupd_http_address,
            shutdown_grace=opts.grace,
            **{k: v for k, v in opts.extra.items() if k in BaseServiceSettings.model_fields},
        )
        # A refused token stops the run (exit 2); the records not run keep iErr 499.
        self.auth_refusal: IErr | None = None
        settings = caller_settings(opts, self.bus_settings)
        self.budget = batch_budget(opts.budget_usd, settings.prices(), self.batch)
        self.token_source = (
            pool_source(settings.accounts)
            if settings.accounts
            else token_source(
                opts.access_token, settings.credentials, token_file=settings.access_token_file
            )
        )
        gate = AuthGate(
            self.token_source, retry_interval=0, on_close=self._token_refused, prove_first=True
        )
        # Builds the upstream config: a missing or expired token fails here, before work.
        # In this process (no -n) an ask is never handed out again once its result is
        # published, so the caller remembers no answered ids (100k of them took ~15 MB).
        self.caller = CallerService(
            settings,
            auth_gate=gate,
            answered_memory=ANSWERED_MEMORY if opts.enable_nsq else 0,
            limiter=fleet_limiter(settings)  # --limit-scope (--accounts: one per account)
            if opts.enable_nsq and not settings.accounts
            else None,
            account_limiter=fleet_limiter if opts.enable_nsq else None,  # one per account
            budget=self.budget,
        )
        download_dir = Path(opts.download_dir or self.input.parent).resolve()
        self.downloader: DownloaderService | None = None
        if opts.enable_download:
            check_download_dir(download_dir)
            from gpt4batch.services.downloader.service import DownloaderService
            from gpt4batch.services.downloader.settings import DownloaderSettings

            # The upstream the operator configured may serve its own files (the simulator on
            # 127.0.0.1:PORT): its host:port is allowed, every other local address is not.
            from_env = load(DownloaderSettings, download_dir=str(download_dir))
            allowed = [*from_env.allow_download_host, *opts.allow_download_host]
            self.downloader = DownloaderService(
                load(
                    DownloaderSettings,
                    download_dir=str(download_dir),
                    allow_download_host=allowed + upstream_hosts(settings, self.caller),
                )
            )
        self.download_dir = download_dir
        self.channel = run_channel(self.batch)
        self.sink_service = SinkService(
            # Its own batch only, however long it takes: no age bound.
            embedded_settings(out=self.out, max_manifestless_age=math.inf),
            channel=self.channel,
            only_batch=self.batch,
            on_record=self._on_record,
            finisher=self._finish,
        )
        self.sink = self.sink_service.sink
        self.ledger: BatchLedger | None = None
        self.progress: RunProgress | None = None
        self.stop = asyncio.Event()
        self.complete = asyncio.Event()  # set by the finisher, once the output is written
        self.final: FinalCounts | None = None  # the output's counts, once written
        self.ingest_summary: IngestSummary | None = None

    def _token_refused(self, error: IErr) -> None:
        if self.auth_refusal is None:
            self.auth_refusal = error
        self.stop.set()

    async def preflight(self) -> None:
        """Checks that need the event loop, before any work: the upstream answers, and NSQ
        is reachable (-n)."""
        pool = self.caller.pool
        for config in [a.config for a in pool.accounts] if pool else [self.caller.config]:
            await check_upstream(config.explicit_urls() or {"--base-url": config.base()})
        if self.opts.enable_nsq:
            await check_reachable(self.opts.nsqd_tcp_address, "--nsqd-tcp-address")
            await check_reachable(self.opts.lookupd_http_address, "--lookupd-http-address")

    async def execute(self) -> RunResult:
        started = time.monotonic()
        await self.preflight()
        moved = await asyncio.to_thread(retire_side_files, self.out, self.batch)
        if self.out in moved:  # paid-for results of an earlier run: kept, and said so
            print(f"gpt4batch run: {self.out} held an earlier run's output; kept as "
                  f"{moved[self.out]}", file=sys.stderr)  # fmt: skip
        await self.sink.start()
        ledger = self.ledger = await self.sink.ledger(self.batch)
        if self.budget is not None:  # what this batch's calls cost before a restart counts
            self.budget.spent_usd = ledger.usage.cost_usd
        self.progress = RunProgress(
            self.opts.progress, ledger.counts, calls=self.caller.calls, usage=ledger.usage
        )
        if ledger.counts.done:  # a run of this batch was killed or stopped: said in one line
            print(continuing_line(ledger.journal_path, ledger.counts.done), file=sys.stderr)
        bus = make_bus(self.opts, self.bus_settings)
        services = [s for s in (self.caller, self.downloader) if s is not None]
        for service in services:
            await service.start()
            service.register(bus)
        self.sink_service.register(bus)
        interrupted = True
        try:
            if not await start_unless_stopped(bus, self.stop):  # Ctrl-C while NSQ is awaited
                await bus.stop(0)
            else:
                ingest_task = asyncio.create_task(self._ingest(bus))
                try:
                    interrupted = await self._wait(ingest_task)
                finally:
                    await self._shutdown(bus, ingest_task, interrupted)
        finally:
            for service in services:
                await service.close()
            await self.sink.close()
        self.progress.draw(final=True)
        final = self.final
        if interrupted or final is None:  # stopped: the output of what reached the ledger
            final = await asyncio.to_thread(self._write_output, ledger.journal_path)
        if final.not_run == 0 and not interrupted:
            ledger.journal_path.unlink(missing_ok=True)  # the output is the record now
        errors = await asyncio.to_thread(write_errors, self.out)
        return RunResult(
            final,
            time.monotonic() - started,
            self.caller.calls.calls,
            interrupted,
            self.ingest_summary,
            errors,
            self.caller.calls.rate_limited,
        )

    def _on_record(self, msg: ResultMessage) -> None:
        if self.progress is not None:
            self.progress.on_record(msg)

    async def _finish(self, ledger: BatchLedger) -> None:
        """The run's finisher, called by the sink once the batch is complete (again after a
        late success replaced a failure): the output beside the input, then `_wait` ends."""
        self.final = await asyncio.to_thread(self._write_output, ledger.journal_path)
        self.complete.set()

    async def _ingest(self, bus: Bus) -> IngestSummary:
        assert self.ledger is not None
        digest = await asyncio.to_thread(file_sha256, self.input)
        with open_input(str(self.input)) as source:
            summary = await ingest(
                read_lines(source.stream, MAX_LINE_BYTES),
                bus,
                batch=self.batch,
                source=source.name,
                base_dir=source.base_dir,
                fix=self.opts.fix,
                input_path=str(self.input.resolve()),
                input_sha256=digest,
                max_line_bytes=MAX_LINE_BYTES,
                skip=self.ledger.seen.__contains__,
                off_loop=True,  # the caller and sink share this loop
            )
        self.ingest_summary = summary
        assert self.progress is not None
        self.progress.total = summary.total
        return summary

    async def _wait(self, ingest_task: asyncio.Task[IngestSummary]) -> bool:
        """Until the sink finished the batch and ingest is done (False) or a stop was asked
        for (True)."""
        assert self.progress is not None
        stop_wait = asyncio.create_task(self.stop.wait())
        complete_wait = asyncio.create_task(self.complete.wait())
        try:
            while True:
                if self.stop.is_set():
                    return True
                if ingest_task.done():
                    ingest_task.result()  # raises if ingest failed
                    if self.complete.is_set():
                        return False
                self.progress.draw()
                # Woken by a stop, the end of ingest or the finisher; the timeout only
                # redraws the progress.
                waits = {w for w in (stop_wait, ingest_task, complete_wait) if not w.done()}
                await asyncio.wait(
                    waits, timeout=PROGRESS_SECONDS, return_when=asyncio.FIRST_COMPLETED
                )
        finally:
            stop_wait.cancel()
            complete_wait.cancel()

    async def _shutdown(
        self, bus: Bus, ingest_task: asyncio.Task[IngestSummary], interrupted: bool
    ) -> None:
        """Stop in stages so nothing paid for is dropped: callers first, then downloads,
        then the results they published, each counted down on the bus."""
        grace = self.opts.grace
        if not ingest_task.done():
            ingest_task.cancel()
            with suppress(asyncio.CancelledError, Exception):
                await ingest_task
        await bus.stop_consuming(bus.topics.asks, grace)
        if self.downloader is not None:
            await bus.stop_consuming(bus.topics.downloads, 0 if interrupted else grace)
        if interrupted:  # results of the calls that just finished: into the ledger
            topics = [bus.topics.results, bus.topics.result_parts, bus.topics.downloaded]
            await _until_drained(bus, topics, self.channel)
        await bus.stop(grace)
        if not interrupted:  # complete: nothing of this batch is left on the run's channels
            # Deleted once the run's readers are gone: deleting a channel under a connected
            # reader makes nsqd drop the connection (pynsq logs ERRORs and reconnects).
            t = bus.topics
            owned = (t.results, t.result_parts, t.downloaded, t.dead, t.batches)
            await asyncio.gather(
                *(bus.delete_channel(topic, self.channel) for topic in owned),
                return_exceptions=True,
            )

    def _write_output(self, journal: Path) -> FinalCounts:
        with open_input(str(self.input)) as source:
            return write_final(read_lines(source.stream, MAX_LINE_BYTES), journal, self.out)


async def _until_drained(
    bus: Bus, topics: list[str], channel: str, timeout: float = DRAIN_TIMEOUT
) -> None:
    """Until the run's channel of each topic holds nothing (queued, deferred, in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            backlog = sum([await bus.backlog(topic, channel) for topic in topics])
        except Exception as exc:  # nsqd gone: what it holds stays for the next run
            log.warning("cannot read the run's backlog", error=str(exc))
            return
        if backlog == 0:
            return
        await asyncio.sleep(0.05)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse(args)
    if opts.estimate:  # no token, no NSQ, no call
        try:
            check_input(opts.input)
            settings = caller_settings(opts, load(BaseServiceSettings))
        except ConfigError as exc:
            print(f"gpt4batch run: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        return print_estimate(opts, settings)
    glog.configure(opts.log_format, "info", service="run")
    print("\n".join([first_line(opts, args), *start_notices(opts)]), file=sys.stderr, flush=True)
    warn_secrets_in_argv("gpt4batch run", args)

    async def go() -> int:
        try:
            run = Run(opts)
        except ConfigError as exc:
            print(f"gpt4batch run: error: {exc}", file=sys.stderr)
            return EXIT_USAGE

        def on_stop() -> None:
            print(
                f"\ngpt4batch run: stopping; in-flight calls get {opts.grace:g}s "
                "(Ctrl-C again to abort at once)",
                file=sys.stderr,
            )

        def on_abort() -> None:
            print("\ngpt4batch run: aborted", file=sys.stderr)
            os._exit(EXIT_ABORTED)  # ledger lines are fsynced; output is atomic

        install_stop_signals(run.stop, on_stop=on_stop, on_abort=on_abort)
        try:
            result = await run.execute()
        except (ConfigError, BusConnectError) as exc:
            print(f"gpt4batch run: error: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if run.auth_refusal is not None:
            print_summary(run, result)
            print(refused_line(run, result), file=sys.stderr)
            return EXIT_USAGE
        print_summary(run, result)
        if run.budget is not None and run.budget.reached:
            print(budget_line(run, result), file=sys.stderr)
        for line in end_notices(opts, result.final):
            print(line, file=sys.stderr)
        ok = result.final.failed == 0 and result.final.not_run == 0
        return EXIT_OK if ok else EXIT_FAILED

    return run_process(go)
