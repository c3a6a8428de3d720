"""The ingest inbox watcher: settled files are ingested once, then moved away."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpt4batch.common.errors import PublishError
from gpt4batch.services.ingest import cli
from gpt4batch.services.ingest.inbox import watch_inbox

POLL = 0.02


async def _watch(inbox: Path, ingest_file, until) -> None:  # type: ignore[no-untyped-def]
    stop = asyncio.Event()
    task = asyncio.create_task(watch_inbox(inbox, inbox / "processed", ingest_file, stop, POLL))
    for _ in range(200):
        if until():
            break
        await asyncio.sleep(POLL)
    stop.set()
    await asyncio.wait_for(task, 2)


def test_a_dropped_file_is_ingested_once_and_moved_to_processed(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.jsonl").write_text('{"id": "1", "asks": []}\n')
    (inbox / "notes.txt").write_text("not a batch")
    seen: list[str] = []

    async def ingest_file(path: Path, final: Path) -> None:
        seen.append(path.read_text())

    asyncio.run(_watch(inbox, ingest_file, lambda: (inbox / "processed/a.jsonl").exists()))

    assert seen == ['{"id": "1", "asks": []}\n']
    assert not (inbox / "a.jsonl").exists()
    assert (inbox / "notes.txt").exists()


def test_a_bus_error_leaves_the_file_to_retry_and_a_bad_file_moves_to_failed(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "retry.jsonl").write_text("x\n")
    (inbox / "bad.jsonl").write_text("y\n")
    attempts: dict[str, int] = {}

    async def ingest_file(path: Path, final: Path) -> None:
        attempts[path.name] = attempts.get(path.name, 0) + 1
        if path.name == "bad.jsonl":
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "bad")
        if attempts[path.name] < 3:
            raise PublishError("nsqd went away")

    asyncio.run(_watch(inbox, ingest_file, lambda: (inbox / "processed/retry.jsonl").exists()))

    assert attempts == {"bad.jsonl": 1, "retry.jsonl": 3}
    assert (inbox / "failed/bad.jsonl").exists()


def test_a_second_file_with_the_same_name_does_not_overwrite_the_first(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    (inbox / "processed").mkdir(parents=True)
    (inbox / "processed/a.jsonl").write_text("old\n")
    (inbox / "a.jsonl").write_text("new\n")

    async def ingest_file(path: Path, final: Path) -> None:
        return None

    asyncio.run(_watch(inbox, ingest_file, lambda: not (inbox / "a.jsonl").exists()))

    assert (inbox / "processed/a.jsonl").read_text() == "old\n"
    assert (inbox / "processed/a.1.jsonl").read_text() == "new\n"


def test_gpt4batch_ingest_with_inbox_runs_the_watcher(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--inbox", "/nonexistent", "--help"])
    assert exit_.value.code == 0
    assert "--poll-interval" in capsys.readouterr().out


def test_the_manifest_names_where_the_file_lives_after_the_move(tmp_path: Path) -> None:
    """The inbox moves a batch's input to processed/: its manifest names that final place."""
    from gpt4batch.common.memory_bus import MemoryBus
    from gpt4batch.common.messages import BatchManifest
    from gpt4batch.services.ingest.inbox import InboxSettings

    inbox = tmp_path / "inbox"
    (inbox / "processed").mkdir(parents=True)
    (inbox / "processed/a.jsonl").write_text("an earlier batch of the same name\n")
    (inbox / "a.jsonl").write_text('{"id": "1", "asks": [{"id": "q", "content": "hi"}]}\n')
    settings = InboxSettings(input="-", inbox=str(inbox), progress="off")

    async def scenario() -> MemoryBus:
        bus = MemoryBus(record=True)

        async def ingest_file(path: Path, final: Path) -> None:
            one = settings.model_copy(update={"input": str(path)})
            await cli.ingest_file(one, bus, final_path=final)

        await _watch(inbox, ingest_file, lambda: not (inbox / "a.jsonl").exists())
        return bus

    bus = asyncio.run(scenario())
    (body,) = bus.published[bus.topics.batches]
    manifest = BatchManifest.model_validate_json(body)
    assert manifest.input == str(inbox / "processed/a.1.jsonl")
    assert (inbox / "processed/a.1.jsonl").exists()
