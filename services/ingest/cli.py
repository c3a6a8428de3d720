"""`gpt4batch ingest -i FILE [--batch ID] [--fix]`: publish a JSONL batch to NSQ, then exit."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus
from gpt4batch.common.errors import BusError, ConfigError
from gpt4batch.common.service import EXIT_FAILED, EXIT_OK, App, run_app
from gpt4batch.services.ingest.batch_id import default_batch_id
from gpt4batch.services.ingest.checkpoint import PublishedSeqs, default_state_dir
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.progress import Progress
from gpt4batch.services.ingest.reader import STDIN, file_sha256, open_input, read_lines
from gpt4batch.services.ingest.settings import IngestSettings

PROG = "gpt4batch ingest"
log = glog.get_logger("gpt4batch.ingest")

DESCRIPTION = (
    "Validate a JSONL batch and publish one AskMessage per record, then a BatchManifest. "
    "Blank lines are skipped and not counted; bad lines become rejected result records. "
    "With --inbox DIR it watches a folder instead (--inbox DIR --help lists those options)."
)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if any(a == "--inbox" or a.startswith("--inbox=") for a in args):
        from gpt4batch.services.ingest.inbox import main as watch_main

        return watch_main(args)
    return run_app(
        "ingest", DESCRIPTION, IngestSettings, build, argv, short={"input": "-i"}, prog=PROG
    )


def build(settings: IngestSettings) -> App:
    """Ingest as a producer app: publish the file, print the summary, exit."""
    problem = _check_input(settings.input)
    if problem:
        raise ConfigError(problem)

    async def publish(bus: Bus, stop: asyncio.Event) -> int:
        try:
            summary = await ingest_file(settings, bus)
        except BusError as exc:
            log.error("publishing failed; re-run to finish the same batch", error=str(exc))
            return EXIT_FAILED
        print(summary.line())
        return EXIT_OK

    # Cancelled at once on a signal: re-running resumes the same batch.
    return App(main=publish, main_grace=0)


def _check_input(path: str) -> str | None:
    """Why the input cannot be read (fail before connecting), or None."""
    if path == STDIN:
        return None
    p = Path(path)
    if not p.exists():
        return f"input file {path} does not exist (--input)"
    if not p.is_file():
        return f"input {path} is not a file (--input)"
    try:
        p.open("rb").close()
    except OSError as exc:
        return f"cannot read input file {path}: {exc.strerror} (--input)"
    return None


async def ingest_file(
    settings: IngestSettings, bus: Bus, *, final_path: Path | None = None
) -> IngestSummary:
    """Ingest `settings.input` on a started bus (shared by `-i FILE` and the inbox).

    `final_path`: where the file will live once published (the inbox moves it), the
    location the batch's manifest names.
    """
    with open_input(settings.input) as source:
        batch = settings.batch or default_batch_id(source.path)
        glog.get_logger("gpt4batch.ingest").info(
            "ingesting", input=source.name, batch=batch, fix=settings.fix
        )
        digest = await asyncio.to_thread(file_sha256, source.path) if source.path else None
        published = None
        if digest is not None:
            state_dir = Path(settings.state_dir) if settings.state_dir else default_state_dir()
            published = PublishedSeqs(state_dir, batch, digest)
        return await ingest(
            read_lines(source.stream, settings.max_line_bytes),
            bus,
            batch=batch,
            source=source.name,
            base_dir=source.base_dir,
            fix=settings.fix,
            input_path=str(final_path or source.path) if source.path else None,
            input_sha256=digest,
            input_size=source.path.stat().st_size if source.path else None,
            max_line_bytes=settings.max_line_bytes,
            max_file_bytes=settings.max_file_bytes,
            publish_batch_size=settings.publish_batch_size,
            max_outstanding=settings.publish_concurrency,
            progress=None if settings.progress == "off" else Progress(mode=settings.progress),
            published=published,
            resume=settings.resume,
        )
