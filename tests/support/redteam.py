"""The red-team tally (a pytest plugin; tests/conftest.py loads it). Every test marked
`redteam` replays one attack of issue 18 (some a family of variants); the attack
*succeeds* when its test fails. Every test in tests/security/ is marked; attack tests
that live beside the code they cover (tests/deploy, tests/cli) carry the mark themselves.

`make redteam` ends with one line: `red team: N attacks tried, M succeeded` and the names
of those that succeeded.
"""

from __future__ import annotations

from pathlib import Path

import pytest

SECURITY = Path(__file__).resolve().parent.parent / "security"

_attacks: set[str] = set()  # node ids of the collected tests marked redteam
_tally: dict[str, str] = {}  # test id -> "held", "succeeded" or "not run"


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "redteam: an attack replayed against running services")


@pytest.hookimpl(tryfirst=True)  # before `-m redteam` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(item.path).resolve().is_relative_to(SECURITY):
            item.add_marker(pytest.mark.redteam)
        if item.get_closest_marker("redteam") is not None:
            _attacks.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _attacks:
        return
    if report.when == "call":
        _tally[report.nodeid] = "succeeded" if report.failed else "held"
    elif report.failed and report.nodeid not in _tally:
        _tally[report.nodeid] = "not run"  # a fixture failed: the attack was never tried


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _tally:
        return
    tried = [n for n, outcome in _tally.items() if outcome != "not run"]
    succeeded = [n for n, outcome in _tally.items() if outcome == "succeeded"]
    not_run = [n for n, outcome in _tally.items() if outcome == "not run"]
    line = f"red team: {len(tried)} attacks tried, {len(succeeded)} succeeded"
    if not_run:
        line += f", {len(not_run)} could not be run"
    terminalreporter.write_sep("=", line, red=bool(succeeded or not_run), green=not succeeded)
    for nodeid in succeeded:
        terminalreporter.write_line(f"  succeeded: {nodeid}")
    for nodeid in not_run:
        terminalreporter.write_line(f"  not run: {nodeid}")
