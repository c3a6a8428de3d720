"""Fixtures of the upstream client and simulator tests.

`mock` is one simulator subprocess shared by the session: tests compare
/stats deltas, never absolute counts. Tests needing other flags start their own.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._helpers import DATA, MockUpstream


@pytest.fixture(scope="session")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "7", "--hang-seconds", "20") as m:
        yield m


@pytest.fixture
def data_dir() -> str:
    return str(DATA)
