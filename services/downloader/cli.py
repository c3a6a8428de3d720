"""`gpt4batch downloader`: fetch the files answers point to into one folder."""

from __future__ import annotations

from gpt4batch.common.service import run_app
from gpt4batch.services.downloader.service import DownloaderService
from gpt4batch.services.downloader.settings import DownloaderSettings

DESCRIPTION = (
    "Download each job's URL into --download-dir (temp file + rename, size and time limits, "
    "retries for transient failures) and publish a DownloadResult."
)


def main(argv: list[str] | None = None) -> int:
    return run_app("downloader", DESCRIPTION, DownloaderSettings, DownloaderService, argv)
