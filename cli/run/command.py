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
   has a line and every planned download a result): its finisher writes the
   output in input order from the ledger beside the input, and the run ends.
   On Ctrl-C: stop taking work, let in-flight calls finish for `--grace` s and
   their results reach the ledger, then write the output with the records not
   run marked (the finalizer);
5. a summary, and the resume command if anything failed.

Steps 3-4 are a process hosted by `common/service.host` like every service: the
caller, the downloader and the opened sink are its parts, `services/run/job.py`
its main job and `services/run/stop_order.py` its staged shutdown. This module
only parses, wires and prints.
"""

from __future__ import annotations

import asyncio
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.cli.run.errors_file import ErrorBreakdown
from gpt4batch.cli.run.estimate import print_estimate
from gpt4batch.cli.run.finalize import FinalCounts
from gpt4batch.cli.run.finish import RunOutput
from gpt4batch.cli.run.notices import end_notices, start_notices
from gpt4batch.cli.run.options import RunOptions, parse
from gpt4batch.cli.run.preflight import (
    check_allowed_dirs,
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
from gpt4batch.cli.run.wiring import (
    bus_settings,
    caller_settings,
    downloader,
    fleet_limiter,
    make_bus,
    run_channel,
)
from gpt4batch.common import logging as glog
from gpt4batch.common.credentials import warn_secrets_in_argv
from gpt4batch.common.errors import BusConnectError, ConfigError
from gpt4batch.common.messages import IErr, ResultMessage
from gpt4batch.common.service import (
    EXIT_ABORTED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    App,
    host,
    install_stop_signals,
    run_process,
)
from gpt4batch.common.settings import BaseServiceSettings, load
from gpt4batch.services.caller.accounts import pool_source
from gpt4batch.services.caller.auth_gate import AuthGate, token_source
from gpt4batch.services.caller.budget import batch_budget
from gpt4batch.services.caller.call_stats import CallStats
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.ingest.batch_id import default_batch_id
from gpt4batch.services.ingest.ingest import IngestSummary
from gpt4batch.services.run.completion import Completion
from gpt4batch.services.run.job import RunJob
from gpt4batch.services.run.opened_sink import OpenedSink
from gpt4batch.services.run.stop_order import RunStopOrder
from gpt4batch.services.sink.ledger import BatchLedger
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import embedded_settings


@dataclass
class RunResult:
    final: FinalCounts
    seconds: float
    calls: float
    interrupted: bool
    ingest: IngestSummary | None
    errors: ErrorBreakdown
    rate_limited: int = 0


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
        self.bus_settings = bus_settings(opts)
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
        self.calls = CallStats()  # this run's upstream calls (its progress and summary)
        # Builds the upstream config: a missing or expired token fails here, before work.
        # In this process (no -n) an ask is never handed out again once its result is
        # published, so the caller remembers no answered ids (100k of them took ~15 MB).
        self.caller = CallerService(
            settings,
            auth_gate=gate,
            answered_memory=None if opts.enable_nsq else 0,
            limiter=fleet_limiter(settings)  # --limit-scope (--accounts: one per account)
            if opts.enable_nsq and not settings.accounts
            else None,
            account_limiter=fleet_limiter if opts.enable_nsq else None,  # one per account
            budget=self.budget,
            calls=self.calls,
            own_batches=(self.batch,),  # no gateway stops it: no waiting for stop notices
        )
        self.download_dir = Path(opts.download_dir or self.input.parent).resolve()
        self.downloader = (
            downloader(opts, self.download_dir, settings, self.caller)
            if opts.enable_download
            else None
        )
        self.channel = run_channel(self.batch)
        self.output = RunOutput(self.input, self.out)
        self.completion = Completion(self.output.write)
        self.sink_service = SinkService(
            # Its own batch only, however long it takes: no age bound.
            embedded_settings(out=self.out, max_manifestless_age=math.inf),
            channel=self.channel,
            only_batch=self.batch,
            on_record=self._on_record,
            on_complete=self.completion.finish,
        )
        self.ledger: BatchLedger | None = None
        self.progress: RunProgress | None = None
        self.stop = asyncio.Event()

    def _token_refused(self, error: IErr) -> None:
        if self.auth_refusal is None:
            self.auth_refusal = error
        self.stop.set()

    def _on_record(self, msg: ResultMessage) -> None:
        if self.progress is not None:
            self.progress.on_record(msg)

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
        sink = await OpenedSink.open(self.sink_service, self.batch)
        ledger = self.ledger = sink.ledger
        if self.budget is not None:  # what this batch's calls cost before a restart counts
            self.budget.spent_usd = ledger.usage.cost_usd
        progress = self.progress = RunProgress(
            self.opts.progress, ledger.counts, calls=self.calls, usage=ledger.usage
        )
        if ledger.counts.done:  # a run of this batch was killed or stopped: said in one line
            print(continuing_line(ledger.journal_path, ledger.counts.done), file=sys.stderr)
        job = RunJob(
            self.input,
            batch=self.batch,
            fix=self.opts.fix,
            ledger=ledger,
            completion=self.completion,
            on_ingested=progress.on_ingested,
            redraw=progress.draw,
        )
        stop_order = RunStopOrder(
            job, channel=self.channel, grace=self.opts.grace, downloads=self.downloader is not None
        )
        parts = [p for p in (sink, self.caller, self.downloader) if p is not None]
        app = App(parts=parts, main=job, stop_order=stop_order.stages)
        await host(app, make_bus(self.opts, self.bus_settings), self.stop, self.opts.grace)
        progress.draw(final=True)
        final, errors = await asyncio.to_thread(
            self.output.end,
            ledger.journal_path,
            written=self.completion.written,
            interrupted=job.interrupted,
        )
        return RunResult(
            final,
            time.monotonic() - started,
            self.calls.calls,
            job.interrupted,
            job.summary,
            errors,
            self.calls.rate_limited,
        )


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
