"""`gpt4batch reconcile`: republish exactly what a batch's ledger still owes (after nsqd lost
messages). Argument parsing and printing only; the logic is services/reconcile.py."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import Field

from gpt4batch.common import logging as glog
from gpt4batch.common.errors import BusError, ConfigError
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.service import EXIT_FAILED, EXIT_OK, EXIT_USAGE, parse_settings
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.services.reconcile import ReconcileError, reconcile

PROG = "gpt4batch reconcile"
DESCRIPTION = (
    "Compare a batch's manifest with its ledger (output lines, download rows) and republish "
    "exactly the missing records and download jobs; nothing already in the output is run "
    "again. Waits first until nsqd holds nothing for the pipeline. See docs/reliability.md."
)


class ReconcileSettings(BaseServiceSettings):
    out: str = Field(description="The batch's output path as the sink names it (-o FILE, or "
                     "<out-dir>/<batch>.jsonl); its ledger files sit beside it.")  # fmt: skip
    input: str | None = Field(None, description="The batch's input (default: from its manifest).")
    download_dir: str | None = Field(
        None, description="Also re-fetch fetched files missing here or not matching their row."
    )
    wait: float = Field(
        60.0, ge=0, description="Seconds to wait for the pipeline to go idle first (0: do not)."
    )
    rounds: int = Field(
        3, ge=1, description="Check again after the pipeline is idle, up to this many times."
    )


def main(argv: Sequence[str] | None = None) -> int:
    settings = parse_settings(PROG, DESCRIPTION, ReconcileSettings, argv, {"out": "-o"})
    glog.configure(settings.log_format, settings.log_level, service="reconcile")
    return asyncio.run(_run(settings))


async def _run(settings: ReconcileSettings) -> int:
    try:
        bus = NsqBus(settings, service="reconcile", connect_timeout=15.0)  # a command: bounded
        await bus.start()
    except ConfigError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BusError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    try:
        report = await reconcile(
            bus,
            Path(settings.out),
            input_path=Path(settings.input) if settings.input else None,
            download_dir=Path(settings.download_dir) if settings.download_dir else None,
            wait=settings.wait,
            rounds=settings.rounds,
        )
    except ReconcileError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BusError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    finally:
        await bus.stop(grace=0)
    print(report.line())
    return EXIT_OK
