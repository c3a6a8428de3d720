"""Progress output: one rewritten line on a TTY, nothing on stderr otherwise (logs instead)."""

from __future__ import annotations

import io

from gpt4batch.services.ingest.ingest import IngestSummary
from gpt4batch.services.ingest.progress import Progress


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_tty_gets_one_updating_line_and_a_final_newline() -> None:
    out = FakeTty()
    progress = Progress(out)
    progress.every = 0
    summary = IngestSummary(batch="b", source="s", total=1000, published=900, rejected=3)

    progress(summary)
    summary.total, summary.seconds = 2000, 1.0
    progress(summary)

    text = out.getvalue()
    assert text.startswith("\rread 1,000  published 900  rejected 3")
    assert text.endswith("2,000 lines/s\n")
    assert text.count("\n") == 1


def test_non_tty_writes_nothing_to_the_stream() -> None:
    out = io.StringIO()
    progress = Progress(out, log_every=0)

    progress(IngestSummary(batch="b", source="s", total=5))

    assert out.getvalue() == ""


def test_progress_modes_are_runs() -> None:
    """`--progress bar|log|off|auto` as in `gpt4batch run`; the old true/false still parse."""
    from gpt4batch.services.ingest.settings import IngestSettings

    assert Progress(io.StringIO(), mode="bar").tty is True
    assert Progress(FakeTty(), mode="log").tty is False
    assert Progress(FakeTty(), mode="auto").tty is True
    assert IngestSettings(input="x", progress=False).progress == "off"
    assert IngestSettings(input="x", progress="true").progress == "auto"
    assert IngestSettings(input="x", progress="bar").progress == "bar"
