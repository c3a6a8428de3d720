"""A pytest plugin (tests/conftest.py loads it): the session fails at its end when any module
file was loaded under two names in it, e.g. `common.bus` beside `gpt4batch.common.bus`
(issue 20: two copies of every class, metrics registered twice)."""

from __future__ import annotations

import sys

import pytest

from gpt4batch.common.module_names import describe, modules_loaded_twice


def pytest_sessionfinish(session: pytest.Session) -> None:
    twice = modules_loaded_twice()
    if not twice:
        return
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None:
        print(describe(twice), file=sys.stderr)
    else:
        reporter.ensure_newline()
        reporter.write_sep("!", "one name per module", red=True)
        reporter.write_line(describe(twice), red=True)
