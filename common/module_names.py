"""One name per module (issue 20): a file loaded as two modules (`common.bus` beside
`gpt4batch.common.bus`) makes two copies of every class in it, so `isinstance` fails across
them and its Prometheus metrics register twice. Services check at start-up
(common/service.py) and the test session at its end (tests/conftest.py)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from types import ModuleType


class ModuleLoadedTwice(RuntimeError):
    """A module file is loaded under more than one name."""


def modules_loaded_twice(modules: Mapping[str, ModuleType] | None = None) -> dict[str, list[str]]:
    """Each file loaded as more than one module object (default: `sys.modules`), with the
    names it is loaded under. One module object under two names (`os.path` is `posixpath`)
    is one load, not two."""
    loaded = sys.modules if modules is None else modules
    files: dict[object, str] = {}
    names_by_file: dict[object, dict[int, str]] = {}
    for name, module in list(loaded.items()):
        file = getattr(module, "__file__", None)
        if isinstance(file, str):
            key = _identity(file)
            files.setdefault(key, file)
            names_by_file.setdefault(key, {}).setdefault(id(module), name)
    return {
        files[key]: sorted(names.values()) for key, names in names_by_file.items() if len(names) > 1
    }


def _identity(file: str) -> object:
    """The file itself, whatever path or symlink names it (one stat: cheap at start-up)."""
    try:
        found = os.stat(file)
    except OSError:  # e.g. a module from a zip archive: its path is all there is
        return file
    return (found.st_dev, found.st_ino)


def check_one_name_per_module(modules: Mapping[str, ModuleType] | None = None) -> None:
    """Raise `ModuleLoadedTwice` naming each file loaded under two names and those names."""
    twice = modules_loaded_twice(modules)
    if twice:
        raise ModuleLoadedTwice(describe(twice))


def describe(twice: Mapping[str, list[str]]) -> str:
    listed = "; ".join(f"{file} as {' and '.join(names)}" for file, names in sorted(twice.items()))
    return f"modules loaded twice, under two names (import each as gpt4batch.*): {listed}"
