"""`gpt4batch caller`: run conversations from the asks topic against the upstream."""

from __future__ import annotations

from collections.abc import Sequence

from gpt4batch.common.service import run_app
from gpt4batch.services.caller.limits import build_limiter
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings


def main(argv: Sequence[str] | None = None) -> int:
    return run_app(
        "caller",
        "Consume AskMessages, run each conversation against the upstream, publish results.",
        CallerSettings,
        lambda settings: CallerService(
            settings,
            # With --accounts each account has a limiter (its own limit group) and no other.
            limiter=None if settings.accounts else build_limiter(settings),
            account_limiter=build_limiter,
        ),
        argv,
        short={"concurrency": "-g", "qps": "-q", "model": "-m", "gizmo_id": "-z"},
        skip=frozenset({"max_in_flight"}),  # --concurrency is the caller's in-flight limit
    )
