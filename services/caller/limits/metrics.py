"""Limit metrics: the limit in force, this caller's share of it, and the starts it granted."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

from gpt4batch.common.metrics import NAMESPACE

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
