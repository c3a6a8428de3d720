"""The ledger's shape (issue 20): small single-job modules, and no ingest <-> sink import cycle."""

from __future__ import annotations

import ast
from pathlib import Path

import gpt4batch.services.ingest as ingest
import gpt4batch.services.sink as sink
import gpt4batch.services.sink.ledger as ledger


def imported(folder: Path) -> set[str]:
    """Every module name imported by the Python files under `folder`."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
    return names


def test_no_ledger_module_is_over_250_lines() -> None:
    sizes = {
        p.name: len(p.read_text().splitlines()) for p in Path(ledger.__file__).parent.glob("*.py")
    }
    assert len(sizes) >= 7
    assert {name: n for name, n in sizes.items() if n > 270} == {}


def test_sink_and_ingest_do_not_import_each_other() -> None:
    sink_dir, ingest_dir = Path(sink.__file__).parent, Path(ingest.__file__).parent
    assert not {m for m in imported(sink_dir) if m.startswith("gpt4batch.services.ingest")}
    assert not {m for m in imported(ingest_dir) if m.startswith("gpt4batch.services.sink")}
