"""Limit metrics: the limit in force, this caller's share of it, and the starts it granted."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prometheus_client import Counter, Gauge

from gpt4batch.common.metrics import NAMESPACE

if TYPE_CHECKING:
    from gpt4batch.services.caller.limits.tokens import TokenLimit

LIMIT_QPS = Gauge(
    f"{NAMESPACE}_limit_qps",
    "Upstream calls/s limit in force for this caller's limit group (0: none).",
    ["scope", "group"],
)
LIMIT_CONCURRENCY = Gauge(
    f"{NAMESPACE}_limit_concurrency",
    "Conversations in flight allowed to this caller's limit group.",
    ["scope", "group"],
)
MEMBERS = Gauge(
    f"{NAMESPACE}_limit_members", "Callers this caller sees sharing its limits (itself included)."
)
SHARE_QPS = Gauge(f"{NAMESPACE}_limit_share_qps", "This caller's share of the calls/s limit.")
SHARE_CONCURRENCY = Gauge(
    f"{NAMESPACE}_limit_share_concurrency", "This caller's share of the conversations in flight."
)
STARTS = Counter(f"{NAMESPACE}_limit_starts_total", "Upstream call starts the limiter granted.")
SKIPPED = Counter(
    f"{NAMESPACE}_limit_late_slots_total",
    "Pacing slots given up because the call woke too late to use them (a busy loop).",
)
VIEW_CHANGES = Counter(
    f"{NAMESPACE}_limit_membership_changes_total",
    "Times this caller saw the set of callers sharing its limits change.",
)
LIMIT_TPM = Gauge(
    f"{NAMESPACE}_limit_tpm",
    "Tokens per minute (prompt + completion) allowed to this caller's limit group (0: none).",
    ["scope", "group"],
)
SHARE_TPM = Gauge(f"{NAMESPACE}_limit_share_tpm", "This caller's share of the tokens per minute.")
WINDOW_TOKENS = Gauge(
    f"{NAMESPACE}_limit_window_tokens",
    "Tokens this caller started in the last 60 s (estimates until the upstream reports usage).",
    ["scope", "group"],
)
TOKEN_PAUSES = Gauge(
    f"{NAMESPACE}_limit_token_pauses",
    "429 token-limit pauses this caller honoured (its own or another member's).",
    ["scope", "group"],
)


def watch_tokens(scope: str, group: str, limit: TokenLimit) -> None:
    """The token limit's gauges, read when scraped (nothing is set per call)."""
    LIMIT_TPM.labels(scope, group).set_function(lambda: limit.limit)
    WINDOW_TOKENS.labels(scope, group).set_function(limit.window_tokens)
    TOKEN_PAUSES.labels(scope, group).set_function(lambda: limit.pauses)
