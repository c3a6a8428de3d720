"""The downloads: a file the model produced to fetch (topic `…downloads`), and what became
of it (topic `…downloaded`)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from gpt4batch.common.messages.base import Body


class DownloadJob(Body):
    """A file the model produced, to fetch into the download folder (topic `…downloads`)."""

    kind: ClassVar[str] = "DownloadJob"
    record_id: str
    ask_id: str
    url: str
    local: str = Field(description="File name inside the download folder (no path).")


class DownloadResult(Body):
    """What became of a DownloadJob (topic `…downloaded`)."""

    kind: ClassVar[str] = "DownloadResult"
    record_id: str
    ask_id: str
    url: str
    local: str
    ok: bool
    size: int | None = None
    sha256: str | None = None
    error: str | None = None
