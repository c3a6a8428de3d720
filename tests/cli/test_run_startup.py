"""What `gpt4batch run` pays before and after its work: the modules it imports, and that
the end of a batch (counted by the ledger) ends the run without waiting for a tick."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gpt4batch.cli.main import import_command
from gpt4batch.cli.run import command
from gpt4batch.common.tls import client_context
from gpt4batch.common.upstreams.transport import UpstreamHttp
from gpt4batch.services.run import completion
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import read_jsonl

#: Modules the embedded `run` never uses: NSQ's client stack (only with -n), the downloader
#: (only with -e), the gateway and the simulator.
NOT_FOR_RUN = (
    "nsq",
    "tornado",
    "gpt4batch.common.nsq.bus",
    "gpt4batch.services.downloader.service",
    "gpt4batch.services.gateway",
    "gpt4batch.services.mock_upstream",
)


def imported_by(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after `statement`."""
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.splitlines()[-1]))


def test_the_run_command_imports_nothing_the_embedded_run_does_not_use() -> None:
    modules = imported_by("import gpt4batch.cli.run.command")
    assert "gpt4batch.services.caller.service" in modules  # the probe sees real imports
    loaded = sorted(m for m in modules if m.startswith(NOT_FOR_RUN))
    assert loaded == []


def test_the_front_door_imports_no_service_stack() -> None:
    modules = imported_by("from gpt4batch.cli.main import main, usage\nusage()")
    assert "gpt4batch.cli.main" in modules
    assert {"pydantic", "aiohttp", "httpx", "nsq", "prometheus_client"} & modules == set()


def test_a_commands_imports_leave_the_collector_on_and_freeze_only_in_its_own_process() -> None:
    """The program (`main()`) freezes what its command's imports built; a caller of
    `main(argv)` (a test) gets its collector back as it was."""
    frozen = gc.get_freeze_count()
    assert import_command("gpt4batch.cli.export").__name__ == "gpt4batch.cli.export"
    assert gc.isenabled() and gc.get_freeze_count() == frozen
    code = (
        "import gc\nfrom gpt4batch.cli.main import import_command\n"
        "import_command('gpt4batch.cli.run', freeze=True)\n"
        "print(gc.isenabled(), gc.get_freeze_count() > 10000)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["True", "True"]


def test_every_tls_client_shares_one_context() -> None:
    http = UpstreamHttp(4)
    assert http._ssl is client_context()
    assert http._transport.ssl_context is client_context()  # httpx's side, same bundle


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream() as m:
        yield m


def test_completion_ends_the_run_not_the_progress_tick(
    mock: MockUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the progress tick an hour long the run can only end because the ledger's
    counts woke it (a hang fails the test through its timeout)."""
    monkeypatch.setattr(completion, "PROGRESS_SECONDS", 3600.0)
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": "hi"}]}) + "\n"
            for i in range(3)
        )
    )
    out = tmp_path / "out.jsonl"
    argv = ["-i", str(source), "-o", str(out), "--progress", "off", "-e", "false", "-q", "0"]
    argv += ["--base-url", mock.url, "--access-token", mock.token]
    assert command.main(argv) == 0
    assert [r["id"] for r in read_jsonl(out)] == ["r0", "r1", "r2"]
