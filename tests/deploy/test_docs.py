"""docs/metrics.md lists every metric; docs/deployment.md's examples are valid bodies; every
command block of README.md and docs/*.md runs against the simulator or says why it cannot."""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import pytest
from prometheus_client import REGISTRY

from gpt4batch.common.nsq_exporter import _Families
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import free_port as _free_port

ROOT = Path(__file__).resolve().parents[2]
METRIC_MODULES = [
    "gpt4batch.common.metrics",
    "gpt4batch.services.ingest.metrics",
    "gpt4batch.services.caller.metrics",
    "gpt4batch.services.caller.limits.metrics",
    "gpt4batch.services.downloader.metrics",
    "gpt4batch.services.sink.metrics",
    "gpt4batch.services.gateway.metrics",
]


def _exposed_names() -> set[str]:
    for module in METRIC_MODULES:
        importlib.import_module(module)
    names = {m.name for m in REGISTRY.collect() if m.name.startswith("gpt4batch_")}
    names |= {m.name for m in _Families().all()}
    # prometheus_client keeps counter family names without `_total`; the series have it.
    return {n + "_total" if not n.endswith("_total") and _is_counter(n) else n for n in names}


def _is_counter(name: str) -> bool:
    return any(
        m.name == name and m.type == "counter" for m in [*REGISTRY.collect(), *_Families().all()]
    )


def test_metrics_doc_lists_every_metric() -> None:
    doc = (ROOT / "docs/metrics.md").read_text()
    documented = set(re.findall(r"^\| `(gpt4batch_[a-z0-9_]+)` \|", doc, re.M))
    assert _exposed_names() - documented == set()


def test_deployment_examples_are_valid_against_the_message_schemas() -> None:
    doc = (ROOT / "docs/deployment.md").read_text()
    blocks = [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", doc, re.S)]
    schemas = {
        name: json.loads((ROOT / f"schemas/{name}.json").read_text())
        for name in ("AskMessage", "BatchManifest")
    }
    ask, manifest = blocks
    jsonschema.Draft202012Validator(schemas["AskMessage"]).validate(ask)
    jsonschema.Draft202012Validator(schemas["BatchManifest"]).validate(manifest)
    assert ask["batch"] == manifest["batch"]


# --- Every command block of README.md and docs/*.md runs, or says why it cannot ------------
#
# The line before a ```bash/sh/shell/console/python block is one of
#   <!-- runnable -->                  run by the test below, against the simulator
#   <!-- not runnable: <reason> -->    e.g. needs an account, Docker or nsqd
# A runnable block runs with bash (python blocks with this Python) in a fresh folder holding
# a copy of examples/ (as a clone's root does), with this venv's gpt4batch first on PATH and
# no GPT4BATCH_* variable.
# The docs' simulator is `gpt4batch mock-upstream` with its defaults (127.0.0.1:8765, token
# sk-mock): the test starts one on a free port and puts that port in place of 8765 (a block
# that starts its own simulator gets the free port too, and no second one).

COMMAND_LANGUAGES = {"bash", "sh", "shell", "console", "python", ""}
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
_MARK = re.compile(r"<!--\s*(runnable|not runnable:\s*\S.*?)\s*-->\s*$")
DOC_PORT = "8765"
BLOCK_TIMEOUT = 240


@dataclass(frozen=True)
class Block:
    doc: str
    line: int
    language: str
    code: str
    mark: str | None

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def command_blocks() -> list[Block]:
    blocks = []
    for path in DOC_FILES:
        text = path.read_text(encoding="utf-8")
        for match in _FENCE.finditer(text):
            language = match.group(1).lower()
            if language not in COMMAND_LANGUAGES:
                continue
            before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            mark = _MARK.search(before)
            line = text.count("\n", 0, match.start()) + 1
            doc = str(path.relative_to(ROOT))
            blocks.append(Block(doc, line, language, match.group(2), mark and mark.group(1)))
    return blocks


def test_every_command_block_is_marked_runnable_or_not() -> None:
    unmarked = [b.id for b in command_blocks() if b.mark is None]
    assert unmarked == [], (
        "put `<!-- runnable -->` (run against the simulator by tests/deploy/test_docs.py) or "
        "`<!-- not runnable: <why> -->` on the line before each of these command blocks: "
        + ", ".join(unmarked)
    )


RUNNABLE = [b for b in command_blocks() if b.mark == "runnable"]


def test_the_docs_have_runnable_blocks() -> None:
    docs = {b.doc for b in RUNNABLE}
    assert {"README.md", "docs/mock-upstream.md", "docs/input-format.md"} <= docs


@pytest.mark.parametrize("block", RUNNABLE, ids=lambda b: b.id)
def test_runnable_block_runs_against_the_simulator(block: Block, tmp_path: Path) -> None:
    work = tmp_path / "work"
    shutil.copytree(ROOT / "examples", work / "examples")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPT4BATCH_", "PYTHON"))}
    env.update(PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin", HOME=str(tmp_path))
    with contextlib.ExitStack() as stack:
        if "gpt4batch mock-upstream" in block.code:
            port = str(_free_port())
        else:
            mock = stack.enter_context(MockUpstream())
            port = mock.url.rsplit(":", 1)[1]
        code = block.code.replace(DOC_PORT, port)
        argv = [sys.executable, "-c", code] if block.language == "python" else ["bash", "-c", code]
        if block.language != "python":
            argv[1:1] = ["-e", "-o", "pipefail"]
        proc = subprocess.Popen(
            argv,
            cwd=work,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # what the block starts in the background is stopped below
        )
        try:
            output, _ = proc.communicate(timeout=BLOCK_TIMEOUT)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
    assert proc.returncode == 0, f"{block.id} failed:\n{code}\n--- output ---\n{output[-3000:]}"
