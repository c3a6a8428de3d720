"""Upstream limits (calls/s and conversations in flight), per process or shared by a fleet.

Two implementations of one `Limiter` interface: `ProcessLimiter` (this process
alone: `--limit-scope process`) and `FleetLimiter` (every caller of one limit
group shares `--qps` and `--concurrency`, coordinated through nsqd alone:
`--limit-scope fleet`, the default). The caller gets one injected and hands
`limiter.acquire` to the upstream clients as their `before_call` hook.
"""

from __future__ import annotations

from gpt4batch.services.caller.limits.base import Limiter, ProcessLimiter
from gpt4batch.services.caller.limits.fleet import FleetLimiter, build_limiter

__all__ = ["FleetLimiter", "Limiter", "ProcessLimiter", "build_limiter"]
