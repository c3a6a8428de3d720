"""`gpt4batch sink`: append results to a JSONL file, fsynced before each FIN."""

from __future__ import annotations

from gpt4batch.common.service import run_app
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings

DESCRIPTION = (
    "Append every result as one output line (fsynced before the message is finished), "
    "drop duplicates, and mark a batch complete (.done + a message) when its total is reached."
)


def main(argv: list[str] | None = None) -> int:
    return run_app("sink", DESCRIPTION, SinkSettings, SinkService, argv, short={"out": "-o"})
