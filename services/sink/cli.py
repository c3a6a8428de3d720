"""`gpt4batch sink`: append results to a JSONL file, fsynced before each FIN."""

from __future__ import annotations

from gpt4batch.common.service import run_app
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings

DESCRIPTION = (
    "Keep each batch's ledger (every result fsynced before its message is finished, "
    "duplicates dropped, dead letters counted as failed lines). While a batch is open its "
    "output file grows in arrival order; once its manifest's every record has a line "
    "and every planned download a result, write the output in input order and mark the "
    "batch complete (.done + a message). No manifest is required, but batches without one "
    "are bounded (--max-batches-without-manifest)."
)


def main(argv: list[str] | None = None) -> int:
    def build(settings: SinkSettings) -> SinkService:
        return SinkService(settings)

    return run_app("sink", DESCRIPTION, SinkSettings, build, argv, short={"out": "-o"})
