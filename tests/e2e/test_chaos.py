"""Chaos in the suite, bounded: 250 records (`make chaos` runs 2,000), ~20% mixed upstream
faults, kill -9 of caller, downloader and sink at random points, a graceful nsqd restart,
kill -9 of ingest and its re-run. The seed is printed (and in the failure message).
Issue 19's two cases of `make chaos` run here too, as bounded: every service started
before nsqd, and two nsqd sharing a node id (about 30 s each with 250 records)."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

from tests.support.chaos import CASES, run_chaos


@pytest.mark.parametrize("case", list(CASES))
def test_chaos_bounded(case: str, tmp_path: Path) -> None:
    seed = int(os.environ.get("CHAOS_SEED") or random.SystemRandom().randrange(1 << 30))
    print(f"chaos case {case} seed {seed}")
    report = run_chaos(tmp_path, 250, seed, timeout=150, **CASES[case])
    print(report.summary())
    assert not report.problems, report.summary()
    assert report.files_planned > 0 and report.ok > 0
