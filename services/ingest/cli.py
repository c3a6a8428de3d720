"""`gpt4batch ingest -i FILE [--batch ID] [--fix]`: publish a JSONL batch to NSQ, then exit."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from gpt4batch.common import logging as glog
from gpt4batch.common.errors import BusError, ConfigError
from gpt4batch.common.metrics import serve_metrics
from gpt4batch.common.nsq_bus import NsqBus
from gpt4batch.common.service import EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_settings
from gpt4batch.services.ingest.batch_id import default_batch_id
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.progress import Progress
from gpt4batch.services.ingest.reader import STDIN, file_sha256, open_input, read_lines
from gpt4batch.services.ingest.settings import IngestSettings

PROG = "gpt4batch ingest"
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
    settings = parse_settings(PROG, DESCRIPTION, IngestSettings, argv, short={"input": "-i"})
    problem = _check_input(settings.input)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return EXIT_USAGE
    glog.configure(settings.log_format, settings.log_level, service="ingest")
    try:
        return asyncio.run(_run(settings))
    except KeyboardInterrupt:
        return 130


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


async def connect(settings: IngestSettings, prog: str = PROG) -> NsqBus | int:
    """A started bus (and the metrics endpoint), or the exit code saying why not."""
    try:
        bus = NsqBus(settings, service="ingest")
    except ConfigError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    serve_metrics(settings.metrics_port, settings.metrics_host)
    try:
        await bus.start()
    except BusError as exc:
        glog.get_logger("gpt4batch.ingest").error("cannot connect to NSQ", error=str(exc))
        return EXIT_FAILED
    return bus


async def _run(settings: IngestSettings) -> int:
    log = glog.get_logger("gpt4batch.ingest")
    bus = await connect(settings)
    if isinstance(bus, int):
        return bus
    try:
        summary = await ingest_file(settings, bus)
    except BusError as exc:
        log.error("publishing failed; re-run to finish the same batch", error=str(exc))
        return EXIT_FAILED
    finally:
        await bus.stop(grace=0)
    print(summary.line())
    return EXIT_OK


async def ingest_file(settings: IngestSettings, bus: NsqBus) -> IngestSummary:
    """Ingest `settings.input` on a started bus (shared by `-i FILE` and the inbox)."""
    with open_input(settings.input) as source:
        batch = settings.batch or default_batch_id(source.path)
        glog.get_logger("gpt4batch.ingest").info(
            "ingesting", input=source.name, batch=batch, fix=settings.fix
        )
        return await ingest(
            read_lines(source.stream, settings.max_line_bytes),
            bus,
            batch=batch,
            source=source.name,
            base_dir=source.base_dir,
            fix=settings.fix,
            input_path=str(source.path) if source.path else None,
            input_sha256=file_sha256(source.path) if source.path else None,
            input_size=source.path.stat().st_size if source.path else None,
            max_line_bytes=settings.max_line_bytes,
            max_file_bytes=settings.max_file_bytes,
            publish_batch_size=settings.publish_batch_size,
            max_outstanding=settings.publish_concurrency,
            progress=Progress() if settings.progress else None,
        )
