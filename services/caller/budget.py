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
