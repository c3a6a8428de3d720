"""A spending limit (`run --budget-usd`): no new conversation starts once it would pass it.

Before a conversation calls, its cost is estimated (common/usage.py:
`conversation_estimate` at the configured prices) and reserved; when it ends the
reservation is replaced by what it cost. A conversation whose reservation would take
spent + reserved past the limit does not start (iErr 402), and from then on none does:
the records not run are resumed with a budget of their own. So the limit is passed by
at most what the conversations in flight cost beyond their estimates.

The budget takes its limit and what was spent already as values, so one per batch
(`run`) or one per account (an accounts file) is the same class.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.usage import Prices


@dataclass
class Budget:
    """`limit_usd` for the conversations of `batch` (None: of every batch)."""

    limit_usd: float
    spent_usd: float = 0.0
    batch: str | None = None
    reserved_usd: float = 0.0
    reached: bool = False

    def applies(self, batch: str) -> bool:
        return self.batch is None or self.batch == batch

    def reserve(self, estimate_usd: float) -> bool:
        """Reserve a conversation's estimated cost; False (and reached from now on) when it
        would take spent + reserved past the limit."""
        if self.reached or self.spent_usd + self.reserved_usd + estimate_usd > self.limit_usd:
            self.reached = True
            return False
        self.reserved_usd += estimate_usd
        return True

    def settle(self, reserved_usd: float, cost_usd: float) -> None:
        """A reserved conversation ended having cost `cost_usd`."""
        self.reserved_usd = max(0.0, self.reserved_usd - reserved_usd)
        self.spent_usd += cost_usd

    def refusal(self) -> str:
        return (
            f"budget reached: ${self.spent_usd:,.4f} spent and ${self.reserved_usd:,.4f} in "
            f"flight of the ${self.limit_usd:,.4f} budget (--budget-usd); not run"
        )


def batch_budget(limit_usd: float | None, prices: Prices, batch: str) -> Budget | None:
    """`run --budget-usd` for `batch` (None: no budget); ConfigError when nothing is priced,
    so that it could never be reached."""
    if limit_usd is None:
        return None
    if prices.free:
        raise ConfigError(
            "--budget-usd needs prices: give --input-usd-per-1m, --output-usd-per-1m or "
            "--usd-per-call (without them every call costs 0)"
        )
    return Budget(limit_usd, batch=batch)
