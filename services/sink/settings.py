"""Options of `gpt4batch sink`: where results go and how often they are fsynced."""

from __future__ import annotations

from pydantic import Field, model_validator

from gpt4batch.common.settings import BaseServiceSettings


class SinkSettings(BaseServiceSettings):
    """`-o FILE` (one output file) or `--out-dir DIR` (one file per batch)."""

    out: str | None = Field(
        None,
        description="Output JSONL file of the first batch seen; any other batch gets "
        "<stem>.<batch>.jsonl "
        "beside it, with its own count and .done.",
    )
    out_dir: str | None = Field(
        None, description="Folder for one output file per batch: <DIR>/<safe batch id>.jsonl."
    )
    fsync_every: int = Field(500, ge=1, description="Fsync after this many buffered lines.")
    fsync_interval_ms: int = Field(
        50, ge=1, description="Fsync buffered lines at least this often (milliseconds)."
    )

    part_wait_seconds: float = Field(
        120.0,
        gt=0,
        description="How long a piece of a result too large for one message waits for its "
        "other pieces before it is given back (each give-back counts toward --max-attempts; "
        "then the piece goes to the dead-letter topic).",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> SinkSettings:
        if bool(self.out) == bool(self.out_dir):
            raise ValueError("give exactly one of --out/-o FILE or --out-dir DIR")
        return self
