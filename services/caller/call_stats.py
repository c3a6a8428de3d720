"""Counts of one caller's upstream calls, kept by the caller itself (not the process-wide
Prometheus registry), so a run's progress and summary are that run's alone."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field


@dataclass
class CallStats:
    """Upstream HTTP answers seen, and asks started, since `started`."""

    started: float = field(default_factory=time.monotonic)
    calls: int = 0
    rate_limited: int = 0
    asks_answered: int = 0
    conversations: int = 0
    asks_started: int = 0
    by_status: Counter[int] = field(default_factory=Counter)

    def record(self, endpoint: str, status: int) -> None:
        """One upstream call answered (`endpoint`: chat, upload, ...)."""
        self.calls += 1
        self.by_status[status] += 1
        if status == 429:
            self.rate_limited += 1
        elif status < 300 and endpoint == "chat":
            self.asks_answered += 1

    def conversation(self, asks: int) -> None:
        self.conversations += 1
        self.asks_started += asks

    @property
    def asks_per_conversation(self) -> float | None:
        return self.asks_started / self.conversations if self.conversations else None

    def rate(self, now: float | None = None) -> float:
        elapsed = (now or time.monotonic()) - self.started
        return self.calls / elapsed if elapsed > 0 else 0.0
