"""What `gpt4batch run` shows while it works: a bar on a TTY, a log line per record otherwise."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from prometheus_client import REGISTRY

from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import ResultMessage
from gpt4batch.services.sink.ledger import LedgerCounts

log = get_logger("gpt4batch.run")


def metric_total(name: str) -> float:
    """Sum of every sample of a counter in this process's registry (0 if absent)."""
    total = 0.0
    for family in REGISTRY.collect():
        if family.name == name.removesuffix("_total"):
            total += sum(s.value for s in family.samples if s.name == name)
    return total


def upstream_calls() -> float:
    return metric_total("gpt4batch_upstream_calls_total")


def rate_limited() -> float:
    return metric_total("gpt4batch_upstream_429_total")


def clock(seconds: float) -> str:
    seconds = int(max(0, seconds))
    hours, rest = divmod(seconds, 3600)
    return (
        f"{hours:d}:{rest // 60:02d}:{rest % 60:02d}"
        if hours
        else f"{rest // 60:02d}:{rest % 60:02d}"
    )


class RunProgress:
    """Draws the bar (throttled) and logs records when there is no terminal."""

    def __init__(self, mode: str, counts: LedgerCounts, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.bar = mode == "bar" or (mode == "auto" and tty)
        self.log_records = mode == "log" or (mode == "auto" and not tty)
        self.counts = counts
        self.total: int | None = None
        self.started = time.monotonic()
        self.done_at_start = counts.done
        self._last_draw = 0.0

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

    def draw(self, final: bool = False) -> None:
        if not self.bar:
            return
        now = time.monotonic()
        if not final and now - self._last_draw < 0.2:
            return
        self._last_draw = now
        c = self.counts
        elapsed = now - self.started
        rate = (c.done - self.done_at_start) / elapsed if elapsed > 0 else 0.0
        total = self.total
        if total:
            width = 24
            filled = int(width * min(1.0, c.done / total))
            bar = "#" * filled + "." * (width - filled)
            eta = clock((total - c.done) / rate) if rate > 0 else "--:--"
            head = f"[{bar}] {c.done:,}/{total:,}"
        else:
            head, eta = f"{c.done:,} done", "--:--"
        text = (
            f"\r{head}  ok {c.ok:,}  failed {c.failed:,}  {rate:,.1f} rec/s  "
            f"ETA {eta}  429s {int(rate_limited())}  "
        )
        self.stream.write(text + ("\n" if final else ""))
        self.stream.flush()
