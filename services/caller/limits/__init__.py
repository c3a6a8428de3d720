"""Upstream limits (calls/s, conversations in flight, tokens/min), per process or by a fleet.

Two implementations of one `Limiter` interface: `ProcessLimiter` (this process
alone: `--limit-scope process`) and `FleetLimiter` (every caller of one limit
group shares `--qps` and `--concurrency`, coordinated through nsqd alone:
`--limit-scope fleet`, the default). The caller gets one injected and hands
`limiter.acquire` to the upstream clients as their `before_call` hook and
`limiter.tokens` (tokens.py, `--tpm`) as their token meter. One limiter is one
set of limits and one group: build one per account to hold each to its own.
"""

from __future__ import annotations

from gpt4batch.services.caller.limits.base import Limiter, LimitSettings, ProcessLimiter
from gpt4batch.services.caller.limits.fleet import FleetLimiter, build_limiter, process_limiter
from gpt4batch.services.caller.limits.tokens import TokenLimit

__all__ = [
    "FleetLimiter",
    "LimitSettings",
    "Limiter",
    "ProcessLimiter",
    "TokenLimit",
    "build_limiter",
    "process_limiter",
]
