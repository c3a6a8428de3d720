"""Account pools: several upstream accounts, each with its own token and limits (`--accounts`)."""

from __future__ import annotations

from gpt4batch.services.caller.accounts.config import AccountSpec, load_accounts
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
    "refused_midway",
]
