"""Options of `gpt4batch downloader`."""

from __future__ import annotations

from pydantic import Field, field_validator

from gpt4batch.common.settings import BaseServiceSettings, CommaList
from gpt4batch.services.downloader.guard import Allowance

MIB = 1024 * 1024


class DownloaderSettings(BaseServiceSettings):
    """Where files go and the limits on fetching them."""

    download_dir: str = Field(description="Folder the files are written to (created if missing).")
    max_download_bytes: int = Field(100 * MIB, ge=1, description="Largest file accepted, in bytes.")
    download_timeout: float = Field(
        300.0, gt=0, description="Seconds allowed to connect, between reads, and in total."
    )
    download_attempts: int = Field(
        5, ge=1, description="Deliveries of a job before a transient failure becomes final."
    )
    max_in_flight: int = Field(20, ge=1, le=2500, description="Downloads at once.")
    allow_download_host: CommaList = Field(
        default_factory=list,
        description="A host (HOST or HOST:PORT) or range (CIDR) downloads may come from although "
        "it is not public (loopback, private, link-local): repeatable. Default none: an answer "
        "naming 127.0.0.1, 10.x, 169.254.169.254 … is refused, redirects included.",
    )

    @field_validator("allow_download_host")
    @classmethod
    def _check_allowance(cls, value: list[str]) -> list[str]:
        Allowance.parse(value)  # ValueError naming the bad entry
        return value

    def allowance(self) -> Allowance:
        return Allowance.parse(self.allow_download_host)
