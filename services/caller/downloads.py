"""Turn an answer's `downloads` URLs into local names, `spec_downloads` and DownloadJobs."""

from __future__ import annotations

from typing import Any

from gpt4batch.common.filenames import download_name
from gpt4batch.common.messages import DownloadJob


def plan_downloads(
    answer: dict[str, Any], *, batch: str, prefix: str, record_id: str, ask_id: str
) -> list[DownloadJob]:
    """Jobs for the answer's files; also records `spec_downloads` on the answer itself."""
    urls = [u for u in answer.get("downloads") or [] if isinstance(u, str) and u]
    if not urls:
        return []
    jobs = [
        DownloadJob(
            batch=batch,
            record_id=record_id,
            ask_id=ask_id,
            url=url,
            local=download_name(prefix, batch, record_id, ask_id, n, url),
        )
        for n, url in enumerate(urls)
    ]
    answer["spec_downloads"] = [{"origin": job.url, "local": job.local} for job in jobs]
    return jobs
