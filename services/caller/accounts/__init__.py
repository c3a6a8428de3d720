"""Account pools: several upstream accounts, each with its own token and limits (`--accounts`)."""

from __future__ import annotations

from gpt4batch.services.caller.accounts.config import AccountSpec, load_accounts, pool_source
from gpt4batch.services.caller.accounts.pool import (
    BUDGETS_REACHED,
    Account,
    AccountPool,
    refused_midway,
)

__all__ = [
    "BUDGETS_REACHED",
    "Account",
    "AccountPool",
    "AccountSpec",
    "load_accounts",
    "pool_source",
    "refused_midway",
]
