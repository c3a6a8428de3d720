"""Caller metrics: upstream calls, latency, retries, 429s and the effective QPS limit."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from gpt4batch.common.metrics import LATENCY_BUCKETS, NAMESPACE

UPSTREAM_CALLS = Counter(
    f"{NAMESPACE}_upstream_calls_total",
    "Upstream HTTP calls by endpoint and HTTP status (or our 59x code).",
    ["endpoint", "status"],
)
UPSTREAM_SECONDS = Histogram(
    f"{NAMESPACE}_upstream_call_duration_seconds",
    "Upstream HTTP call latency, from request sent to answer received.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
RETRIES = Counter(
    f"{NAMESPACE}_upstream_retries_total", "Retries of transient upstream failures.", ["status"]
)
RATE_LIMITED = Counter(
    f"{NAMESPACE}_upstream_429_total", "Upstream answers 429 (too many requests)."
)
QPS_LIMIT = Gauge(
    f"{NAMESPACE}_caller_qps_limit", "Effective upstream calls/s limit of this caller (0: none)."
)
CONCURRENCY_LIMIT = Gauge(
    f"{NAMESPACE}_caller_concurrency_limit", "Conversations this caller runs at once."
)
RECORDS = Counter(
    f"{NAMESPACE}_caller_records_total", "Conversations finished, by outcome.", ["outcome"]
)
REDELIVERED_ANSWERED = Counter(
    f"{NAMESPACE}_caller_redelivered_answered_total",
    "Asks redelivered after this caller had published their result: finished, not paid again.",
)
STOPPED_ASKS = Counter(
    f"{NAMESPACE}_caller_stopped_asks_total",
    "Asks of a batch the gateway stopped, finished without an upstream call, by reason "
    "(cancelled, expired).",
    ["reason"],
)
TOKENS = Counter(
    f"{NAMESPACE}_tokens_total",
    "Tokens of answered calls, by account and kind (prompt, completion): as the upstream "
    "reported them, else estimated (common/tokens.py).",
    ["account", "kind"],
)
COST = Counter(
    f"{NAMESPACE}_cost_usd_total",
    "What answered calls cost, USD, by account, at the configured prices (0 without prices).",
    ["account"],
)
BUDGET_REFUSED = Counter(
    f"{NAMESPACE}_budget_refused_total",
    "Conversations not started because they would pass the budget (iErr 402).",
)
ACCOUNT_REFUSED = Gauge(
    f"{NAMESPACE}_caller_account_refused",
    "1 while the upstream refuses the account's token (it is out of the rotation), else 0.",
    ["account"],
)
ACCOUNT_IN_FLIGHT = Gauge(
    f"{NAMESPACE}_caller_account_conversations",
    "Conversations this caller runs on the account now (--accounts).",
    ["account"],
)
