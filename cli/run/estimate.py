"""`gpt4batch run --estimate`: what a batch would take, without a single call (issue 21).

The input is read as a run reads it; each conversation is estimated by the rule of
common/tokens.py (prompt from the text sent and its images; each answer at the
request's --max-tokens, else --completion-tokens-estimate; OpenAI kinds send the
earlier turns again with every ask), priced at the configured prices, and timed at
the limits: the calls at -q and the tokens at --tpm (the longer wins; 0 = no limit).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import TextIO

from pydantic import ValidationError

from gpt4batch.cli.run.options import RunOptions
from gpt4batch.cli.run.progress import clock
from gpt4batch.common.messages import Record
from gpt4batch.common.service import EXIT_OK, EXIT_USAGE
from gpt4batch.common.usage import Prices, Usage, asks_estimate
from gpt4batch.services.caller.settings import CallerSettings
from gpt4batch.services.ingest.reader import open_input, read_lines

MAX_LINE_BYTES = 10 * 1024 * 1024


@dataclass
class BatchEstimate:
    """What reading the input found: the records a run would call for, the lines it would
    refuse or keep, and the tokens and calls of those records' conversations (estimated)."""

    records: int = 0
    invalid: int = 0
    kept: int = 0
    usage: Usage = field(default_factory=lambda: Usage(estimated=True))


def estimate_batch(opts: RunOptions, settings: CallerSettings) -> BatchEstimate:
    """Read the input and estimate every conversation a run of it would make."""
    found = BatchEstimate()
    default = settings.completion_tokens_estimate
    with open_input(opts.input) as source:
        for line in read_lines(source.stream, MAX_LINE_BYTES):
            try:
                record = Record.model_validate(json.loads(line.data or b""))
            except (ValueError, ValidationError, RecursionError):
                found.invalid += 1  # ingest would refuse it: no call
                continue
            if opts.fix and record.iErr is None:
                found.kept += 1  # a resume passes it through
                continue
            found.records += 1
            prompt, completion, calls = asks_estimate(
                record.asks,
                kind=settings.upstream,
                completion_default=default,
                max_tokens=settings.max_tokens,
            )
            found.usage.prompt_tokens += prompt
            found.usage.completion_tokens += completion
            found.usage.calls += calls
    return found


def estimate_lines(found: BatchEstimate, settings: CallerSettings) -> list[str]:
    prices, usage = settings.prices(), found.usage
    cost = prices.cost(usage.prompt_tokens, usage.completion_tokens, usage.calls)
    tpm = settings.tpm
    by_calls = usage.calls / settings.qps if settings.qps else 0.0
    by_tokens = usage.total_tokens / tpm * 60 if tpm else 0.0
    completion_rule = (
        f"--max-tokens {settings.max_tokens}"
        if settings.max_tokens
        else f"--completion-tokens-estimate {settings.completion_tokens_estimate}"
    )
    skipped = f"{found.invalid:,} not valid"
    if found.kept:
        skipped += f", {found.kept:,} kept by -f"
    qps_part = f"-q {settings.qps:g}: {clock(by_calls)}" if settings.qps else "-q 0: no limit"
    tpm_part = f"--tpm {tpm:,}: {clock(by_tokens)}" if tpm else "--tpm 0: no limit"
    return [
        f"gpt4batch run --estimate: no call made; {found.records:,} records to run "
        f"({skipped}), {usage.calls:,} calls",
        f"  tokens    {usage.total_tokens:,} ({usage.prompt_tokens:,} prompt + "
        f"{usage.completion_tokens:,} completion, each answer at {completion_rule})",
        f"  cost      ${cost:,.4f} at {_price_words(prices)}",
        f"  time      at least {clock(max(by_calls, by_tokens))} ({qps_part}; {tpm_part}; "
        "plus the upstream's answer time)",
    ]


def _price_words(prices: Prices) -> str:
    if prices.free:
        return "no prices (--input-usd-per-1m, --output-usd-per-1m, --usd-per-call: all 0)"
    return (
        f"${prices.input_usd_per_1m:g}/1M prompt, ${prices.output_usd_per_1m:g}/1M completion, "
        f"${prices.usd_per_call:g}/call"
    )


def print_estimate(opts: RunOptions, settings: CallerSettings, out: TextIO | None = None) -> int:
    try:
        found = estimate_batch(opts, settings)
    except OSError as exc:
        print(f"gpt4batch run: error: cannot read {opts.input}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    lines = estimate_lines(found, settings)
    if settings.accounts is not None:  # the pool's limits and prices, not the caller's
        from gpt4batch.cli.run.accounts_estimate import accounts_estimate

        usage = found.usage
        lines += accounts_estimate(
            settings.accounts, settings, usage.prompt_tokens, usage.completion_tokens, usage.calls
        )
    print("\n".join(lines), file=out or sys.stdout)
    return EXIT_OK
