"""Tokens per key: OpenAI's tokens-per-minute limit, and what `/stats` reports of it.

A model call takes its prompt tokens (counted by the documented estimator of
common/tokens.py, which is then exact against this simulator) plus its
answer's (the answer's text, by the same rule). With `--tpm T`, a call that would
put a key over T tokens accepted within the last 60 s is refused with 429 and
OpenAI's headers: `retry-after` (s), `x-ratelimit-limit-tokens`,
`x-ratelimit-remaining-tokens`, `x-ratelimit-reset-tokens` (`1.5s`, `20ms`);
accepted calls carry the last three as well. Refused calls take no tokens.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field

#: The window tokens are counted over (`--tpm-window`; OpenAI: a minute).
WINDOW = 60.0
#: Seconds of per-second token counts `/stats` keeps per key.
SERIES_SECONDS = 1800


def reset_text(seconds: float) -> str:
    """A duration as OpenAI writes it in `x-ratelimit-reset-tokens`."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


@dataclass
class KeyTokens:
    """One key's accepted tokens: the sliding window, totals and a per-second series."""

    window_seconds: float = WINDOW
    prompt: int = 0
    completion: int = 0
    calls: int = 0
    rate_limited: int = 0
    max_in_window: int = 0
    used: int = 0  # tokens accepted in the last window
    window: deque[tuple[float, int]] = field(default_factory=deque)
    started: bool = False
    per_second: deque[int] = field(default_factory=deque)
    series_start: int = 0

    def expire(self, now: float) -> None:
        window = self.window
        while window and window[0][0] <= now - self.window_seconds:
            self.used -= window.popleft()[1]

    def refusal(self, tokens: int, limit: int, now: float) -> float | None:
        """Seconds until `tokens` fit under `limit` if they do not now, else None."""
        self.expire(now)
        excess = self.used + tokens - limit
        if limit <= 0 or excess <= 0:
            return None
        if tokens > limit:
            return self.window_seconds  # never fits: OpenAI's "request too large"
        for at, taken in self.window:
            excess -= taken
            if excess <= 0:
                return at + self.window_seconds - now
        return self.window_seconds

    def accept(self, prompt: int, completion: int, now: float) -> None:
        tokens = prompt + completion
        self.prompt += prompt
        self.completion += completion
        self.calls += 1
        self.window.append((now, tokens))
        self.used += tokens
        self.max_in_window = max(self.max_in_window, self.used)
        second = math.floor(now)
        if not self.started:
            self.started, self.series_start = True, second
        while self.series_start + len(self.per_second) <= second:
            self.per_second.append(0)
        self.per_second[second - self.series_start] += tokens
        while len(self.per_second) > SERIES_SECONDS:
            self.per_second.popleft()
            self.series_start += 1

    def as_json(self) -> dict[str, object]:
        return {
            "prompt_tokens": self.prompt,
            "completion_tokens": self.completion,
            "total_tokens": self.prompt + self.completion,
            "calls": self.calls,
            "rate_limited": self.rate_limited,
            "window_seconds": self.window_seconds,
            "max_tokens_in_window": self.max_in_window,
            # Tokens accepted in each second from `series_start` (the simulator's clock, s).
            "series_start": self.series_start,
            "tokens_per_second": list(self.per_second),
        }
