"""What `gpt4batch run` prints around its work: the first line, the summary (with the
resume command) and the line of a refused token."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from gpt4batch.cli.run.options import RunOptions
from gpt4batch.cli.run.progress import clock
from gpt4batch.cli.run.resume import resume_command, token_note
from gpt4batch.common.errors import IErrCode
from gpt4batch.common.filenames import sibling

if TYPE_CHECKING:
    from gpt4batch.cli.run.command import Run, RunResult


def print_summary(
    run: Run, result: RunResult, stream: object = None, *, show_resume: bool = True
) -> None:
    out = stream or sys.stderr
    f = result.final
    rate = result.calls / result.seconds if result.seconds else 0.0
    lines = [
        "",
        f"gpt4batch run: {'stopped' if result.interrupted else 'finished'} "
        f"batch {run.batch} in {clock(result.seconds)}",
        f"  records   {f.total:,}: {f.ok:,} ok, {f.failed:,} failed, {f.not_run:,} not run",
        f"  upstream  {int(result.calls):,} calls ({rate:,.1f}/s), "
        f"{result.rate_limited:,} answered 429",
    ]
    if run.ledger is not None:  # the batch's calls, before a restart too
        lines.append(f"  usage     {run.ledger.usage.summary()}")
    lines.append(f"  output    {run.out}")
    errors = result.errors
    if errors.total:
        plural = "s" if errors.total != 1 else ""
        lines.append(f"  errors    {errors.path} ({errors.total:,} record{plural}), by code:")
        lines += [f"           {row}" for row in errors.lines()]
        if errors.usage.total_tokens or errors.usage.cost_usd:
            lines.append(f"           their answered calls: {errors.usage.summary()}")
    rejects = sibling(run.out, "rejects.jsonl")
    if rejects.exists() and rejects.stat().st_size:
        lines.append(f"  rejects   {rejects}")
    downloads = sibling(run.out, "downloads.jsonl")
    if downloads.exists() and downloads.stat().st_size:
        assert run.ledger is not None
        c = run.ledger.counts
        lines.append(
            f"  downloads {run.download_dir} ({c.downloads_ok} ok, {c.downloads_failed} failed;"
            f" list in {downloads})"
        )
    if show_resume and errors.resumable:
        lines.append(f"  resume    {resume_command(run.opts, run.out)}")
        lines.append(f"            ({token_note(run.opts, run.token_source)})")
    print("\n".join(lines), file=out)  # type: ignore[arg-type]


def first_line(opts: RunOptions, argv: Sequence[str]) -> str:
    """What the run reads and writes, said before anything else (the defaults overwrite)."""
    given = {a.split("=", 1)[0] for a in argv}
    source = "" if given & {"-i", "--in", "--input"} else " (default)"
    target = "" if given & {"-o", "--out", "--output"} else " (default)"
    mode = "through NSQ" if opts.enable_nsq else "in this process"
    return f"gpt4batch run: input {opts.input}{source} -> output {opts.out}{target}, {mode}"


def budget_line(run: Run, result: RunResult) -> str:
    """Said when `--budget-usd` stopped the run from starting conversations."""
    budget = run.budget
    assert budget is not None
    refused = result.errors.by_code.get(int(IErrCode.BUDGET_REACHED), 0)
    return (
        f"gpt4batch run: budget reached: ${budget.spent_usd:,.4f} spent of --budget-usd "
        f"{budget.limit_usd:g}; {refused:,} records not run keep iErr 402 - the resume "
        f"command above runs them with a budget of --budget-usd {budget.limit_usd:g} of their own"
    )


def refused_line(run: Run, result: RunResult) -> str:
    error = run.auth_refusal
    assert error is not None
    return (
        f"gpt4batch run: error: the upstream refused the token from {run.token_source} "
        f"({error.code}); stopped before paying for more: {result.final.not_run:,} records "
        "not run keep iErr 499 - fix the token, then run the resume command above"
    )


def continuing_line(journal: Path, done: int) -> str:
    """Said when a run starts on the journal of an earlier run of the same batch that did
    not finish (killed before its summary, or stopped): that run continues, once."""
    plural = "s" if done != 1 else ""
    return (
        f"gpt4batch run: continuing the interrupted run of this batch from {journal}: "
        f"{done:,} record{plural} already done are not called again"
    )
