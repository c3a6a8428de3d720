"""Fixtures: real nsqlookupd + nsqd on free ports for the whole session, a fresh topic
prefix per test so tests never see each other's messages."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.nsq_servers import Nsqd, Nsqlookupd, run_nsqd, run_nsqlookupd
from tests.support.pipeline import ServiceProcs, nsq_flags
from tests.support.signing import TEST_BUS_SECRET

#: The session fails if a module was loaded under two names (issue 20).
pytest_plugins = ["tests.support.module_guard", "tests.support.redteam"]


@pytest.fixture(scope="session")
def nsq_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("nsq")


@pytest.fixture(scope="session")
def nsqlookupd(nsq_workdir: Path) -> Iterator[Nsqlookupd]:
    with run_nsqlookupd(nsq_workdir) as lookupd:
        yield lookupd


@pytest.fixture(scope="session")
def nsqd(nsq_workdir: Path, nsqlookupd: Nsqlookupd) -> Iterator[Nsqd]:
    with run_nsqd(nsq_workdir, nsqlookupd, "--msg-timeout=3s") as server:
        yield server


@pytest.fixture
def topic_prefix(request: pytest.FixtureRequest) -> Iterator[str]:
    """A prefix of the test's own; its topics on the session's nsqd are deleted after it.
    Left behind, they pile up to thousands of channels, and nsqd's queue scan (20 random
    channels every 100 ms) then reached a deferred message 28 s late (CI)."""
    prefix = f"t{uuid.uuid4().hex[:12]}"
    yield prefix
    if "nsqd" in request.fixturenames:
        nsqd: Nsqd = request.getfixturevalue("nsqd")
        if nsqd.proc is not None and nsqd.proc.poll() is None:
            nsqd.delete_topics(prefix)


@pytest.fixture
def procs(
    tmp_path: Path, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> Iterator[ServiceProcs]:
    """The services as subprocesses on the session's nsqd, stopped after the test."""
    with ServiceProcs(tmp_path, nsq_flags(nsqd, nsqlookupd, topic_prefix)) as running:
        yield running


@pytest.fixture(autouse=True)
def ingest_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test its own ingest published-index folder (subprocesses inherit it): a test
    re-using a batch id and an input must not resume another test's batch."""
    state = tmp_path / "xdg-state"
    monkeypatch.setenv("XDG_STATE_HOME", str(state))
    return state


@pytest.fixture(autouse=True)
def bus_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """The secret the services of a test sign and verify with (subprocesses inherit it)."""
    monkeypatch.setenv("GPT4BATCH_BUS_SECRET", TEST_BUS_SECRET)
    return TEST_BUS_SECRET
