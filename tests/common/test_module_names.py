"""One name per module (issue 20): the top-level folders refuse their own names, and a module
file loaded under two names fails the test session and stops a service from starting."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

import gpt4batch.common.retry as retry
from gpt4batch.common.module_names import (
    ModuleLoadedTwice,
    check_one_name_per_module,
    modules_loaded_twice,
)

ROOT = Path(__file__).resolve().parents[2]

#: Loads gpt4batch/common/retry.py a second time, as `retry_again`.
LOAD_RETRY_TWICE = """
import importlib.util, sys
import gpt4batch.common.retry as retry
spec = importlib.util.spec_from_file_location("retry_again", retry.__file__)
again = importlib.util.module_from_spec(spec)
sys.modules["retry_again"] = again
spec.loader.exec_module(again)
"""


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("folder", ["common", "services", "cli"])
def test_a_top_level_folder_cannot_be_imported_under_its_own_name(folder: str) -> None:
    """From the repository root (on sys.path in every test run) `import common` found the
    folder and loaded all of gpt4batch.common a second time."""
    r = subprocess.run(
        [sys.executable, "-c", f"import {folder}"],
        capture_output=True, text=True, cwd=ROOT, timeout=60,
    )  # fmt: skip
    assert r.returncode == 1
    assert f"ImportError: import gpt4batch.{folder}, not {folder}:" in r.stderr


def test_a_file_loaded_as_two_modules_is_named_with_both_names(tmp_path: Path) -> None:
    source = tmp_path / "thing.py"
    source.write_text("class Thing: ...\n")
    (tmp_path / "alias.py").symlink_to(source)
    first, second = _load(source, "thing"), _load(tmp_path / "alias.py", "other_thing")
    found = modules_loaded_twice({"thing": first, "other_thing": second, "retry": retry})
    assert found == {str(source): ["other_thing", "thing"]}
    with pytest.raises(ModuleLoadedTwice, match=r"thing\.py as other_thing and thing"):
        check_one_name_per_module({"thing": first, "other_thing": second})


def test_one_module_under_two_names_is_one_load() -> None:
    """`os.path` is the `posixpath` module itself: an alias, not a second copy."""
    assert modules_loaded_twice({"retry": retry, "retry_alias": retry}) == {}
    assert modules_loaded_twice() == {}  # this test session so far


def _pytest_session(tmp_path: Path, test_body: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    (tmp_path / "test_some.py").write_text(f"def test_some():\n{test_body}\n")
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.support.module_guard",
         "-p", "no:cacheprovider", "-c", str(tmp_path / "pytest.ini"), str(tmp_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_the_test_session_fails_when_a_module_is_loaded_twice(tmp_path: Path) -> None:
    body = "".join(f"    {line}\n" for line in LOAD_RETRY_TWICE.strip().splitlines())
    r = _pytest_session(tmp_path, body)
    assert r.returncode == pytest.ExitCode.TESTS_FAILED, r.stdout + r.stderr
    assert "1 passed" in r.stdout
    assert "retry.py as gpt4batch.common.retry and retry_again" in r.stdout + r.stderr


def test_a_session_with_one_name_per_module_passes(tmp_path: Path) -> None:
    r = _pytest_session(tmp_path, "    import gpt4batch.common.retry")
    assert r.returncode == pytest.ExitCode.OK, r.stdout + r.stderr


def test_a_service_with_a_module_loaded_twice_refuses_to_start(tmp_path: Path) -> None:
    start_sink = f"""{LOAD_RETRY_TWICE}
import runpy
sys.argv = ["sink", "-o", {str(tmp_path / "out")!r}, "--metrics-port", "0"]
runpy.run_module("gpt4batch.services.sink", run_name="__main__")
"""
    r = subprocess.run(
        [sys.executable, "-c", start_sink], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 1, r.stderr[-2000:]
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("gpt4batch: error: modules loaded twice")
    assert "retry.py as gpt4batch.common.retry and retry_again" in line
