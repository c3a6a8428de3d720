"""`run --estimate --accounts FILE`: the batch's time at the accounts' summed limits and its
cost at their prices, split as the pool splits conversations (by `account_weight`)."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.cli.run.progress import clock
from gpt4batch.services.caller.accounts.config import load_accounts
from gpt4batch.services.caller.accounts.pool import account_prices, account_weight
from gpt4batch.services.caller.settings import CallerSettings


def accounts_estimate(
    path: Path, settings: CallerSettings, prompt: int, completion: int, calls: int
) -> list[str]:
    """Lines for the estimate (no token is read: an estimate needs none)."""
    specs = load_accounts(path, read_tokens=False)
    weights = [account_weight(spec, settings) for spec in specs]
    total = sum(weights)
    parts, cost = [], 0.0
    for spec, weight in zip(specs, weights, strict=True):
        share = weight / total
        spent = share * account_prices(spec, settings.prices()).cost(prompt, completion, calls)
        cost += spent
        parts.append(f"{spec.name} {share:.0%} ${spent:,.4f}")
    qps = [spec.qps if spec.qps is not None else settings.qps for spec in specs]
    tpm = [spec.tpm if spec.tpm is not None else getattr(settings, "tpm", 0) for spec in specs]
    by_calls = calls / sum(qps) if all(qps) else 0.0
    by_tokens = (prompt + completion) / sum(tpm) * 60 if all(tpm) else 0.0
    return [
        f"  accounts  {len(specs)} in {path}: cost ${cost:,.4f} split by their limits "
        f"({', '.join(parts)}); time at least {clock(max(by_calls, by_tokens))} at their "
        f"summed limits (-q {sum(qps):g}" + (f", --tpm {sum(tpm):,}" if all(tpm) else "") + ")"
    ]
