"""Gateway options; every one is a flag and a `GPT4BATCH_*` variable."""

from __future__ import annotations

import os

from pydantic import Field, model_validator

from gpt4batch.common.settings import BaseServiceSettings, CommaList

#: Several keys in one variable, comma-separated (`--api-key` repeats on the command line).
KEYS_ENV = "GPT4BATCH_API_KEYS"


class GatewaySettings(BaseServiceSettings):
    """HTTP, storage and pacing of the Batch API gateway."""

    port: int = Field(8080, ge=0, le=65535, description="HTTP port of the API (0: any free).")
    host: str = Field("0.0.0.0", description="Address the API listens on.")
    data_dir: str = Field(description="Folder for uploaded files, results and batch metadata.")
    api_key: CommaList = Field(
        default_factory=list,
        description=f"Accepted bearer key (repeatable; also {KEYS_ENV}=k1,k2). "
        "Nothing is served without one.",
    )
    window: int = Field(
        1000,
        ge=1,
        description="Asks of one batch published but not yet answered; more wait, so a "
        "cancel stops spending within this many asks.",
    )
    max_upload_bytes: int = Field(
        200 * 1024 * 1024, ge=1024, description="Largest file accepted by POST /v1/files."
    )
    max_line_bytes: int = Field(
        10 * 1024 * 1024, ge=1024, description="Largest line of a batch input file."
    )

    @model_validator(mode="after")
    def _keys(self) -> GatewaySettings:
        extra = os.environ.get(KEYS_ENV, "")
        self.api_key = [*self.api_key, *(k.strip() for k in extra.split(",") if k.strip())]
        if not self.api_key:
            raise ValueError(
                f"no API key: give --api-key KEY (repeatable) or {KEYS_ENV}; "
                "the gateway serves nothing without one"
            )
        return self
