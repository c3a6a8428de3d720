"""What `gpt4batch run` says besides its summary: choices that change what it does."""

from __future__ import annotations

from gpt4batch.cli.run.finalize import FinalCounts
from gpt4batch.cli.run.options import RunOptions


def start_notices(opts: RunOptions) -> list[str]:
    """Lines said at the start: `-q 0` lifts the only guard on the upstream's rate."""
    lines = []
    if opts.qps == 0:
        lines.append(
            f"gpt4batch run: -q 0: no QPS limit; up to -g {opts.concurrency} conversations "
            "call as fast as the upstream answers"
        )
    return lines


def end_notices(opts: RunOptions, final: FinalCounts) -> list[str]:
    """Lines said after the summary: an input without records is most likely a mistake."""
    if final.total == 0:
        return [
            f"gpt4batch run: warning: {opts.input} holds no records (empty, or blank lines "
            "only); nothing was run and the output is empty"
        ]
    return []
