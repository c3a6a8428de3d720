"""Chaos in the suite, bounded: 250 records (`make chaos` runs 2,000), ~20% mixed upstream
faults, kill -9 of caller, downloader and sink at random points, a graceful nsqd restart,
kill -9 of ingest and its re-run. The seed is printed (and in the failure message)."""

from __future__ import annotations

import os
import random
from pathlib import Path

from tests.support.chaos import run_chaos


def test_chaos_bounded(tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"chaos seed {seed}")
    report = run_chaos(tmp_path, 250, seed, timeout=150)
    print(report.summary())
    assert not report.problems, report.summary()
    assert report.files_planned > 0 and report.ok > 0
