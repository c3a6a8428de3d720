"""Durations the Batch API takes: a batch's `completion_window` and file expiry policies.

`completion_window` is "24h" in the real API; this gateway also takes any whole
number of seconds, minutes, hours or days ("30s", "10m", "2h", "7d"), up to 30
days. `expires_after` / `output_expires_after` are `{"anchor": "created_at",
"seconds": N}` with N between 3600 and 2592000 as the real API requires (the
lower bound is the gateway's `--min-file-expiry`, for operators and tests).
"""

from __future__ import annotations

import re
from typing import Any

_DURATION = re.compile(r"([1-9][0-9]{0,7})([smhd])")
_UNIT = {"s": 1, "m": 60, "h": 3600, "d": 86400}
#: The longest completion window (and the real API's longest file expiry): 30 days.
MAX_SECONDS = 30 * 86400
#: The real API's shortest file expiry (`expires_after.seconds`).
MIN_FILE_EXPIRY = 3600


class BadDuration(ValueError):
    """A duration outside what the API takes; the message says what it takes."""


def window_seconds(window: Any) -> int:
    """The seconds of a `completion_window` such as "24h" or "30s"."""
    match = _DURATION.fullmatch(window) if isinstance(window, str) else None
    seconds = int(match.group(1)) * _UNIT[match.group(2)] if match else 0
    if not match or seconds > MAX_SECONDS:
        raise BadDuration(
            f"completion_window must be '24h' or a duration such as '30s', '10m' or '2h' "
            f"(a whole number of s, m, h or d, at most 30d); got {str(window)[:40]!r}."
        )
    return seconds


def expires_after_seconds(policy: Any, name: str, minimum: int = MIN_FILE_EXPIRY) -> int | None:
    """The seconds of an `expires_after`-shaped policy (None when not given)."""
    if policy is None:
        return None
    if not isinstance(policy, dict) or policy.get("anchor") != "created_at":
        raise BadDuration(
            f"{name} must be an object {{'anchor': 'created_at', 'seconds': N}} "
            f"(the only anchor is 'created_at')."
        )
    seconds = policy.get("seconds")
    if isinstance(seconds, str) and seconds.isdigit():  # multipart form fields are text
        seconds = int(seconds)
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise BadDuration(f"{name}.seconds must be an integer.")
    if not minimum <= seconds <= MAX_SECONDS:
        raise BadDuration(
            f"{name}.seconds must be between {minimum} and {MAX_SECONDS} (30 days); got {seconds}."
        )
    return seconds
