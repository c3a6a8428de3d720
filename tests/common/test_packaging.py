"""The install puts everything under the `gpt4batch` namespace and exposes each entry point."""

from __future__ import annotations

import importlib.machinery
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_has_only_the_gpt4batch_namespace(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "-q",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = tmp_path.glob("gpt4batch-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("gpt4batch-")}
    assert top_level == {"gpt4batch"}
    assert "gpt4batch/__init__.py" not in names  # implicit namespace package
    for package in ("common", "services/ingest", "services/caller", "services/sink", "cli"):
        assert f"gpt4batch/{package}/__init__.py" in names


def test_every_package_folder_is_declared_in_pyproject() -> None:
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    declared = set(config["packages"])
    assert config["package-dir"] == {"": "src"}
    found = set()
    for link in (ROOT / "src/gpt4batch").iterdir():
        folder = link.resolve()
        for init in folder.rglob("__init__.py"):
            rel = init.parent.relative_to(folder).parts
            found.add(".".join(("gpt4batch", link.name, *rel)))
    assert found <= declared, f"add to pyproject packages: {sorted(found - declared)}"


def test_src_gpt4batch_names_each_top_level_folder() -> None:
    links = {p.name: p.readlink() for p in (ROOT / "src/gpt4batch").iterdir()}
    folders = ("common", "services", "cli", "examples")
    assert links == {name: Path("../..", name) for name in folders}


def test_gpt4batch_is_found_on_sys_path_with_no_import_hook() -> None:
    """The editable install is a plain path (a static .pth naming src/), which mypy and IDEs
    follow; setuptools' import hook for the old folder mapping they could not."""
    spec = importlib.machinery.PathFinder.find_spec("gpt4batch")
    assert spec is not None and spec.submodule_search_locations is not None
    assert list(spec.submodule_search_locations) == [str(ROOT / "src/gpt4batch")]
    assert not [f for f in sys.meta_path if "editable" in type(f).__module__]


@pytest.mark.parametrize("command", ["ingest", "caller", "downloader", "sink", "mock-upstream"])
def test_console_script_has_a_help_per_service(command: str) -> None:
    gpt4batch = Path(sys.executable).parent / "gpt4batch"
    result = subprocess.run(
        [str(gpt4batch), command, "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "usage:" in result.stdout


def test_unknown_command_is_a_usage_error() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "frobnicate"], capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "unknown command 'frobnicate'" in result.stderr


def _requirement_name(requirement: str) -> str:
    return re.split(r"[\s<>=!~;\[(]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _runtime_closure(names: set[str]) -> set[str]:
    """The distributions the runtime dependencies pull in (extras and markers left out)."""
    import importlib.metadata as md

    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        todo += [_requirement_name(r) for r in requires if "extra ==" not in r]
    return seen


def test_every_third_party_import_is_a_runtime_dependency() -> None:
    """What the installed package imports must come with `pip install gpt4batch` (PyYAML
    for `--accounts` was only in the test extra, so an image could not read YAML)."""
    import ast
    import importlib.metadata as md
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = _runtime_closure({_requirement_name(r) for r in project["dependencies"]})
    owners = md.packages_distributions()
    missing: dict[str, str] = {}
    for folder in ("common", "services", "cli"):
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    tops = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    tops = [node.module.split(".")[0]]
                else:
                    continue
                for top in tops:
                    if top in sys.stdlib_module_names or top in ("gpt4batch", "__future__"):
                        continue
                    dists = {d.lower().replace("_", "-") for d in owners.get(top, [top])}
                    if not dists & runtime:
                        missing[top] = str(path.relative_to(ROOT))
    assert not missing, f"imported but not a runtime dependency: {missing}"
