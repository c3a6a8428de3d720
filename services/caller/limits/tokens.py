"""The token limit (`--tpm`): tokens per minute, prompt + completion, one caller's share.

Every model call reserves its estimate (common/tokens.py: the prompt from the
body, the completion from `max_tokens`/`max_output_tokens` or
`--completion-tokens-estimate`) before it starts, and the reservation is set to
the `usage` the upstream reports once it answers (kept where it reports none).
A 429 refunds it: a refused call took no tokens.

Two rules hold a caller's starts to its share S of the limit T (S = T in one
process, T/N for each of N callers of a fleet, fleet.py):

- window: the tokens it started in the last 60 s, plus the new call's, stay <= S.
  Exact while the group is fixed: N windows of S each sum to T.
- pace: it starts calls at S/60 tokens a second at most (a call of c tokens
  moves its pace clock 60·c/S s on; a call starts once the clock is not ahead).
  When the group changes each member's share changes at once, but the tokens
  already in its window do not; paced, a member puts at most its rate × time
  into any 60-s window, and the rates sum to T/60 at every moment (the join
  hold of fleet.py orders the changes), so old and new shares together stay
  within T (+ one call per member across the change).

Both count the window 1% long (60.6 s): a call counted from our start arrives
a little later, so its tokens leave the upstream's window a little later too.

A 429 carrying `retry-after` or OpenAI's `x-ratelimit-reset-tokens` pauses every
model call for that long (capped at 60 s); `on_pause` lets the fleet tell the
other members (fleet.py). Waiting is the only timer: a call that fits takes a
deque append and a few additions, no task, timer or log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gpt4batch.common.logging import get_logger
from gpt4batch.common.retry import parse_retry_after
from gpt4batch.common.tokens import (
    estimate_completion_tokens,
    estimate_prompt_tokens,
    reported_usage,
)

log = get_logger("gpt4batch.limits")

#: The window the limit is counted in: tokens per minute (`--tpm-window` for quick tests).
WINDOW = 60.0
#: Share of the window added to it, for the jitter between our clock and the upstream's
#: (a call we count from t arrives a little later: its tokens leave the upstream's window
#: a little later too). As the calls/s pacer's allowance (pacer.py).
JITTER_ALLOWANCE = 0.01
#: The longest pause one 429 imposes (a `reset-tokens` of hours is a daily quota, not TPM).
MAX_PAUSE = 60.0
#: What a call's completion is assumed to take when its body sets no `max_tokens`.
DEFAULT_COMPLETION_ESTIMATE = 1000

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|h|m|s)")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_duration(value: str | None) -> float | None:
    """Seconds in an OpenAI reset header (`1s`, `6m0s`, `20ms`, `1.5s`; a bare number is s)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parts = _DURATION.findall(value)
    if not parts or "".join(n + u for n, u in parts) != value:
        return None
    return sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)


@dataclass(slots=True, eq=False)
class Reservation:
    """One call's tokens in the window: estimated at first, then as reported."""

    tokens: int
    at: float
    counted: bool = True  # still inside the window (its tokens are in `used`)


class TokenLimit:
    """One caller's share of a token limit; the upstream clients' `tokens` meter.

    `limit` is the group's tokens per minute (0: none, and only 429 pauses are
    honoured); `share` this caller's part of it (0 while a fleet member has no
    share yet: model calls wait).
    """

    def __init__(
        self,
        limit: int,
        *,
        share: float | None = None,
        completion_estimate: int = DEFAULT_COMPLETION_ESTIMATE,
        clock: Callable[[], float] = time.monotonic,
        on_pause: Callable[[float], None] | None = None,
        window: float = WINDOW,
    ) -> None:
        self.limit = limit
        self.window = window * (1 + JITTER_ALLOWANCE)
        self.share = float(limit if share is None else share)
        self.completion_estimate = completion_estimate
        self.clock = clock
        self.on_pause = on_pause
        self.used = 0  # tokens of the reservations in the window
        self.pauses = 0  # 429 pauses honoured (own or the fleet's)
        self._window: deque[Reservation] = deque()
        self._pace = -math.inf  # when this caller's starts so far are paid for
        self._paused_until = -math.inf
        self._lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._warned_large = False

    def set_share(self, limit: int, share: float) -> None:
        """The group's limit and this caller's share of it (a fleet's view changed)."""
        if (limit, share) != (self.limit, self.share):
            self.limit, self.share = limit, share
            self._changed.set()

    def window_tokens(self) -> int:
        """Tokens this caller started in the last window (estimates until settled)."""
        self._expire(self.clock())
        return self.used

    def paused_for(self) -> float:
        """Seconds left of a 429 pause (0: none)."""
        return max(0.0, self._paused_until - self.clock())

    async def reserve(self, body: Any) -> Reservation | None:
        """Wait until the call's estimated tokens fit; its reservation (None: not metered)."""
        if self.limit <= 0:
            if self._paused_until > self.clock():
                async with self._lock:
                    await self._wait_until_fits(0)
            return None
        if not isinstance(body, Mapping):
            return None
        tokens = estimate_prompt_tokens(body) + estimate_completion_tokens(
            body, self.completion_estimate
        )
        now = self.clock()
        if not self._lock.locked() and self._wait(tokens, now) <= 0:
            return self._charge(tokens, now)  # fits now, nobody queued before it: no lock
        async with self._lock:
            now = await self._wait_until_fits(tokens)
            if self.limit <= 0:  # the limit was lifted while this call waited
                return None
            return self._charge(tokens, now)

    def _charge(self, tokens: int, now: float) -> Reservation:
        reservation = Reservation(tokens, now)
        self._window.append(reservation)
        self.used += tokens
        self._pace = max(self._pace, now) + tokens * self.window / self.share
        return reservation

    async def _wait_until_fits(self, tokens: int) -> float:
        """Sleep until a call of `tokens` may start (woken early by a change); the time then."""
        while (wait := self._wait(tokens, now := self.clock())) > 0:
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), None if wait == math.inf else wait)
        return now

    def _wait(self, tokens: int, now: float) -> float:
        """Seconds until a call of `tokens` may start (inf: until the share changes)."""
        if self.limit <= 0:
            return self._paused_until - now
        if self.share <= 0:
            return math.inf
        self._expire(now)
        wait = max(self._paused_until, self._pace) - now
        excess = self.used + tokens - self.share
        if excess > 0 and self._window:
            if tokens > self.share:  # never fits: it goes alone, once the window is empty
                excess = self.used
                self._warn_large(tokens)
            for reservation in self._window:
                excess -= reservation.tokens
                if excess <= 0:
                    wait = max(wait, reservation.at + self.window - now)
                    break
        return wait

    def _warn_large(self, tokens: int) -> None:
        if not self._warned_large:
            self._warned_large = True
            log.warning(
                "a call's estimated tokens exceed this caller's share of --tpm: such calls "
                "go alone, once the last minute's calls have left the window",
                tokens=tokens,
                share=round(self.share),
            )

    def _expire(self, now: float) -> None:
        window = self._window
        edge = now - self.window
        while window and window[0].at <= edge:
            reservation = window.popleft()
            reservation.counted = False
            self.used -= reservation.tokens

    def started(self, reservation: Reservation | None) -> bool:
        """The call goes out now (after the calls/s pacing): count it from now. False if a
        429 pause began while it waited: its tokens are released, it must reserve again."""
        now = self.clock()
        if self._paused_until > now:
            if reservation is not None:
                self._correct(reservation, 0)
            return False
        if reservation is not None:
            reservation.at = now
        return True

    def settle(self, reservation: Reservation | None, answer: Any) -> None:
        """Correct the reservation to the tokens the upstream reports (if it does)."""
        if reservation is None:
            return
        usage = reported_usage(answer) if isinstance(answer, Mapping) else None
        if usage is not None:
            self._correct(reservation, usage[0] + usage[1])

    def rate_limited(
        self,
        reservation: Reservation | None,
        retry_after: str | None,
        reset_tokens: str | None,
        remaining_tokens: str | None = None,
    ) -> None:
        """A 429: the call took no tokens; pause model calls as the upstream asks.

        `retry-after` wins. Else `x-ratelimit-reset-tokens` is the pause, unless
        `x-ratelimit-remaining-tokens` says the window still had room for this call:
        then the token limit is not what refused it (e.g. the requests limit), and
        the call's own retry policy decides, with no fleet-wide token pause."""
        wanted = reservation.tokens if reservation is not None else 1
        if reservation is not None:
            self._correct(reservation, 0)
        pause = parse_retry_after(retry_after)
        if pause is None and not _tokens_left(remaining_tokens, wanted):
            pause = parse_duration(reset_tokens)
        if pause:
            pause = min(pause, MAX_PAUSE)
            self.pause(pause)
            if self.on_pause is not None:
                self.on_pause(pause)

    def pause(self, seconds: float) -> None:
        """No model call starts for `seconds` (a 429 seen here or by another member)."""
        until = self.clock() + seconds
        if until > self._paused_until + 0.05:
            self.pauses += 1
            self._paused_until = until

    def _correct(self, reservation: Reservation, tokens: int) -> None:
        delta = tokens - reservation.tokens
        if not delta:
            return
        reservation.tokens = tokens
        if reservation.counted:
            self.used += delta
        if self.share > 0:
            start = self._pace if delta < 0 else max(self._pace, self.clock())
            self._pace = start + delta * self.window / self.share
        if delta < 0:
            self._changed.set()


def _tokens_left(remaining_tokens: str | None, wanted: int) -> bool:
    """Whether OpenAI's `x-ratelimit-remaining-tokens` had room for `wanted` tokens
    (absent or unreadable: no, the 429 is taken as the token limit's)."""
    try:
        return remaining_tokens is not None and int(remaining_tokens) >= max(wanted, 1)
    except ValueError:
        return False
