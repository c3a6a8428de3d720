"""Inbox mode of ingest: publish every `.jsonl` dropped into a folder, then move it away.

    python -m gpt4batch.services.ingest.inbox --inbox ./data/inbox \
        --lookupd-http-address 127.0.0.1:4161

A file is taken once its size and mtime have not changed for one poll (so a
file still being copied in is left alone; writing `x.jsonl.part` and renaming
it is safer still). After its records and manifest are acknowledged by nsqd it
moves to `processed/`; a file that cannot be read or parsed moves to `failed/`;
on a bus error it stays and is tried again, landing in the same batch (the
batch id is derived from the file, and the sink drops duplicates).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus
from gpt4batch.common.errors import BusError
from gpt4batch.common.service import EXIT_OK, App, run_app
from gpt4batch.services.ingest.settings import IngestSettings

PROG = "python -m gpt4batch.services.ingest.inbox"
SUFFIX = ".jsonl"

log = glog.get_logger("gpt4batch.ingest.inbox")

#: `ingest_file(path, final)`: publish the file at `path`, whose manifest names `final`,
#: where the file will live once published (the inbox moves it to processed/).
IngestFile = Callable[[Path, Path], Awaitable[Any]]


class InboxSettings(IngestSettings):
    """Ingest's options, with a watched folder instead of one input file."""

    input: str = Field("-", description="Unused in inbox mode.")
    inbox: str = Field(description="Folder to watch for .jsonl files.")
    processed_dir: str | None = Field(
        None, description="Where published files move (default: <inbox>/processed)."
    )
    failed_dir: str | None = Field(
        None, description="Where unreadable files move (default: <inbox>/failed)."
    )
    poll_interval: float = Field(1.0, gt=0, description="Seconds between scans of the inbox.")


def _unique_target(folder: Path, name: str) -> Path:
    target = folder / name
    n = 1
    while target.exists():
        target = folder / f"{Path(name).stem}.{n}{Path(name).suffix}"
        n += 1
    return target


def _move(path: Path, folder: Path, target: Path | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if target is None or target.exists():
        target = _unique_target(folder, path.name)
    shutil.move(path, target)  # a rename on one filesystem, copy + delete across mounts
    return target


def _candidates(inbox: Path) -> dict[Path, tuple[int, int]]:
    found: dict[Path, tuple[int, int]] = {}
    for path in sorted(inbox.glob(f"*{SUFFIX}")):
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file() and not path.name.startswith("."):
            found[path] = (st.st_size, st.st_mtime_ns)
    return found


async def watch_inbox(
    inbox: Path,
    processed: Path,
    ingest_file: IngestFile,
    stop: asyncio.Event,
    poll: float,
    failed: Path | None = None,
) -> None:
    """Ingest each settled `.jsonl` in `inbox` with `ingest_file`, until `stop` is set."""
    failed = failed or inbox / "failed"
    inbox.mkdir(parents=True, exist_ok=True)
    seen: dict[Path, tuple[int, int]] = {}
    while not stop.is_set():
        current = _candidates(inbox)
        for path, signature in current.items():
            if stop.is_set():
                break
            if seen.get(path) != signature:
                continue  # new or still growing: look again next poll
            await _take(path, processed, failed, ingest_file)
        seen = current
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=poll)


async def _take(path: Path, processed: Path, failed: Path, ingest_file: IngestFile) -> None:
    log.info("ingesting inbox file", file=str(path))
    final = _unique_target(processed, path.name)  # the manifest names where the file will be
    try:
        await ingest_file(path, final)
    except BusError as exc:
        log.error("publishing failed; will retry", file=str(path), error=str(exc))
        return
    except Exception as exc:
        target = _move(path, failed)
        log.error("cannot ingest file", file=str(path), moved_to=str(target), error=str(exc))
        return
    target = _move(path, processed, final)
    log.info("inbox file published", file=str(path), moved_to=str(target))


def main(argv: Sequence[str] | None = None) -> int:
    return run_app(
        "ingest",
        "Watch a folder and publish every .jsonl batch dropped into it.",
        InboxSettings,
        build,
        argv,
        skip=frozenset({"input"}),
        prog=PROG,
    )


def build(settings: InboxSettings) -> App:
    """The inbox as a producer app that runs until it is signalled."""
    from gpt4batch.services.ingest.cli import ingest_file

    inbox = Path(settings.inbox)
    processed = Path(settings.processed_dir) if settings.processed_dir else inbox / "processed"
    failed = Path(settings.failed_dir) if settings.failed_dir else inbox / "failed"

    async def watch(bus: Bus, stop: asyncio.Event) -> int:
        async def ingest_one(path: Path, final: Path) -> None:
            one = settings.model_copy(update={"input": str(path)})
            summary = await ingest_file(one, bus, final_path=final)
            log.info("batch published", summary=summary.line())

        log.info("watching inbox", inbox=str(inbox), processed=str(processed))
        await watch_inbox(inbox, processed, ingest_one, stop, settings.poll_interval, failed)
        return EXIT_OK

    return App(main=watch)


if __name__ == "__main__":
    raise SystemExit(main())
