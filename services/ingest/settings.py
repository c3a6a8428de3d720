"""Options of `gpt4batch ingest` (each also a GPT4BATCH_* environment variable)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.services.ingest.validate import MIB


class IngestSettings(BaseServiceSettings):
    input: str = Field(description="JSONL input file, or - for stdin.")
    batch: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        description="Batch id (default: derived from the file's path, size and mtime, "
        "so a re-run of the same file lands in the same batch).",
    )
    fix: bool = Field(
        False,
        description="Resume: the input is a previous output; successful records pass "
        "straight to results, only failed ones run again.",
    )
    resume: bool = Field(
        True,
        description="Skip the records this batch id already published from this same input "
        "(a re-run after ingest was killed pays for nothing twice), while nsqd still has a "
        "trace of the batch (a new or wiped nsqd gets every record). false: publish every "
        "record and start the index afresh.",
    )
    state_dir: str | None = Field(
        None,
        description="Where ingest keeps each (batch, input)'s published index "
        "(default: $XDG_STATE_HOME/gpt4batch/ingest, else ~/.local/state/gpt4batch/ingest).",
    )
    publish_batch_size: int = Field(500, ge=1, le=1000, description="Messages per MPUB.")
    publish_concurrency: int = Field(
        4, ge=1, le=64, description="MPUBs awaiting nsqd's acknowledgement at once."
    )
    max_line_bytes: int = Field(
        10 * MIB, ge=64, description="Longest accepted input line; longer ones are rejected."
    )
    max_file_bytes: int = Field(
        100 * MIB, ge=0, description="Largest referenced image/file; bigger ones are rejected."
    )
    progress: Literal["auto", "bar", "log", "off"] = Field(
        "auto",
        description="Progress, as in `gpt4batch run`: auto (an updating line on a TTY, else a "
        "log line every 5 s), bar, log or off (GPT4BATCH_PROGRESS also takes true/false).",
    )

    @field_validator("progress", mode="before")
    @classmethod
    def _progress_from_bool(cls, value: object) -> object:
        """The earlier boolean spelling: true = auto, false = off."""
        if isinstance(value, bool):
            return "auto" if value else "off"
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return "auto"
        if isinstance(value, str) and value.lower() in ("false", "0", "no"):
            return "off"
        return value
