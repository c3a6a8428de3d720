"""Options of `gpt4batch sink`: where results go and how often they are fsynced."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.services.sink.pool import Limits


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

    stream_output: bool = Field(
        True,
        description="While a batch is open (no manifest yet, or records still missing), "
        "append each record to its output file as it arrives; the file is rewritten in input "
        "order when the batch completes. false: the output appears only at completion.",
    )
    batch_idle_seconds: float = Field(
        60.0,
        gt=0,
        description="A batch without messages for this long closes its files (they reopen on "
        "its next message); a batch without a manifest idle this long gives its place to a new "
        "one (see --max-batches-without-manifest).",
    )
    max_batches_without_manifest: int = Field(
        64,
        ge=1,
        description="Batches without a BatchManifest held open at once. A message of a further "
        "one waits (requeued, counting toward --max-attempts, then dead-lettered) until one of "
        "them is idle for --batch-idle-seconds. A batch with a manifest is never refused.",
    )
    max_manifestless_age: float = Field(
        24 * 3600.0,
        gt=0,
        description="Seconds a batch without a BatchManifest takes results, counted from its "
        "first message: later results of it are dead-lettered with the reason. A stream of "
        "asks that runs longer publishes its manifest, or reads results on its own channel.",
    )
    max_dropped_manifestless: int = Field(
        1000,
        ge=0,
        description="Batches without a manifest that gave their place (see "
        "--max-batches-without-manifest) whose files are kept on disk; past it the files of "
        "the one dropped longest ago are removed (logged). A batch with a manifest is never "
        "removed.",
    )
    max_batch_records: int = Field(
        10_000_000,
        ge=1,
        description="Highest record count of one batch: a result whose seq is at or above it, "
        "or a manifest announcing more, is dead-lettered (the sink keeps a bit per record).",
    )

    @model_validator(mode="after")
    def _one_destination(self) -> SinkSettings:
        if bool(self.out) == bool(self.out_dir):
            raise ValueError("give exactly one of --out/-o FILE or --out-dir DIR")
        return self

    def limits(self) -> Limits:
        return Limits(
            idle_seconds=self.batch_idle_seconds,
            max_unannounced=self.max_batches_without_manifest,
            max_unannounced_age=self.max_manifestless_age,
            max_dropped_kept=self.max_dropped_manifestless,
            max_records=self.max_batch_records,
        )


class _EmbeddedSinkSettings(SinkSettings):
    """`SinkSettings` from the values given and the defaults alone: no environment."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def embedded_settings(
    *,
    out: Path | None = None,
    out_dir: Path | None = None,
    max_in_flight: int = 200,
    max_manifestless_age: float = 24 * 3600.0,
) -> SinkSettings:
    """The settings of a sink embedded in another process (`run`, the gateway): the
    defaults, not the environment (GPT4BATCH_OUT and the like are the file sink's), and
    the output written only at completion. Validated as the file sink's are."""
    return _EmbeddedSinkSettings(
        out=str(out) if out else None,
        out_dir=str(out_dir) if out_dir else None,
        stream_output=False,
        max_in_flight=max_in_flight,
        max_manifestless_age=max_manifestless_age,
    )
