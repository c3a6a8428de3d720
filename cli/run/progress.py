"""What `gpt4batch run` shows while it works: a bar on a TTY, a log line per record otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import ResultMessage
from gpt4batch.common.status_line import StatusLine
from gpt4batch.common.usage import UsageTotals
from gpt4batch.services.caller.call_stats import CallStats
from gpt4batch.services.ingest.ingest import IngestSummary
from gpt4batch.services.sink.ledger import LedgerCounts

log = get_logger("gpt4batch.run")


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


class RunProgress:
    """Draws the bar (throttled) and logs records when there is no terminal.

    Calls, calls/s and 429s show from the first second (a record of 4 asks takes
    a while); the ETA comes from calls: asks still to answer at the current rate.
    Without a terminal the first `progress` line comes when the first conversation
    starts (within a redraw, 0.2 s), then one every `log_every` s.
    """

    def __init__(
        self,
        mode: str,
        counts: LedgerCounts,
        stream: TextIO | None = None,
        calls: CallStats | None = None,
        log_every: float = 5.0,
        usage: UsageTotals | None = None,
    ) -> None:
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = mode == "bar" or (mode == "auto" and tty)
        self.log_records = mode == "log" or (mode == "auto" and not tty)
        self.counts = counts
        self.calls = calls or CallStats()
        self.usage = usage
        """The batch's spend so far (the ledger's totals), shown once it is above 0."""
        self.total: int | None = None
        self.started = time.monotonic()
        self.done_at_start = counts.done
        self.log_every = log_every
        self._last_draw = 0.0
        self._last_log = self.started
        self._logged = False
        self.status = StatusLine(self.stream)

    def on_record(self, msg: ResultMessage) -> None:
        if self.log_records:
            err = msg.record.iErr
            log.info(
                "record",
                seq=msg.seq,
                id=msg.record.id,
                ok=err is None,
                code=err.code if err else None,
                error=err.message if err else None,
            )
        self.draw()

    def on_ingested(self, summary: IngestSummary) -> None:
        """Ingest has read the whole input: the bar's total is known."""
        self.total = summary.total

    def eta(self, now: float) -> float | None:
        """Seconds left: the asks not yet answered over the answer rate so far."""
        c, calls = self.counts, self.calls
        per_record = calls.asks_per_conversation
        elapsed = now - calls.started
        if not self.total or per_record is None or elapsed <= 0 or not calls.asks_answered:
            return None
        records_left = max(0, self.total - c.done)
        asks_left = max(0.0, records_left * per_record - self._asks_in_progress())
        return asks_left / (calls.asks_answered / elapsed)

    def _asks_in_progress(self) -> float:
        """Asks already answered of records not done yet (their record is still running)."""
        per_record = self.calls.asks_per_conversation or 0.0
        finished = (self.counts.done - self.done_at_start) * per_record
        return max(0.0, self.calls.asks_answered - finished)

    def line(self, now: float) -> str:
        c, calls = self.counts, self.calls
        total = self.total
        left = self.eta(now)
        eta = clock(left) if left is not None else "--:--"
        if total:
            width = 20
            filled = int(width * min(1.0, c.done / total))
            head = f"[{'#' * filled}{'.' * (width - filled)}] {c.done:,}/{total:,}"
        else:
            head = f"{c.done:,} records"
        spent = f"  ${self.usage.cost_usd:,.4f}" if self.usage and self.usage.cost_usd else ""
        return (
            f"{head}  ok {c.ok:,}  failed {c.failed:,}  calls {calls.calls:,} "
            f"({calls.rate(now):,.1f}/s)  429s {calls.rate_limited:,}{spent}  ETA {eta}"
        )

    def draw(self, final: bool = False) -> None:
        now = time.monotonic()
        if not self.bar:
            # The first line as soon as the first conversation starts calling (a user
            # without a terminal sees the run is alive), then one every `log_every` s.
            first = not self._logged and self.calls.conversations > 0
            if self.log_records and not final and (first or now - self._last_log >= self.log_every):
                self._last_log = now
                self._logged = True
                left = self.eta(now)
                log.info(
                    "progress",
                    records_done=self.counts.done,
                    records_total=self.total,
                    calls=self.calls.calls,
                    calls_per_s=round(self.calls.rate(now), 2),
                    http_429=self.calls.rate_limited,
                    cost_usd=round(self.usage.cost_usd, 6) if self.usage else None,
                    eta_s=None if left is None else round(left),
                )
            return
        if not final and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        self.status.show(self.line(now))  # log lines go above it (common/status_line.py)
        if final:
            self.status.finish()
