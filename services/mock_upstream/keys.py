"""Several accepted tokens (keys): counted per key in `/stats`, refused or accepted at run time.

`--token` is the first key; `--also-token` (repeatable) adds more, as an
account pool uses (docs/deployment.md, `--accounts`). `/stats` names a key by
`key_id` (never the key): `key_calls` gives each key's calls, max calls in any
1 s, max calls open at once and refusals. `POST /keys/refuse` and `POST /keys/accept` with
`{"key": "<key id>"}` make the simulator refuse a key with 401 (a revoked or
expired token) and accept it again.
"""

from __future__ import annotations

import hashlib
from collections import deque
from dataclasses import dataclass, field


def key_id(token: str) -> str:
    """How `/stats` names a key: never the key itself."""
    return "key-" + hashlib.sha256(token.encode()).hexdigest()[:8]


@dataclass
class OpenCalls:
    """Calls open now and at most, and the exact max calls started in any 1 s: of the whole
    simulator (`Stats`) and of each key (`KeyCalls`)."""

    in_flight: int = 0
    max_in_flight: int = 0
    max_calls_in_1s: int = 0
    window: deque[float] = field(default_factory=deque)

    def opened(self, now: float, *, window: bool) -> None:
        """A call started; API calls (`window`) also feed the max calls in any 1 s."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        if not window:
            return
        starts = self.window
        while starts and starts[0] <= now - 1.0:
            starts.popleft()
        starts.append(now)
        self.max_calls_in_1s = max(self.max_calls_in_1s, len(starts))


@dataclass
class KeyCalls(OpenCalls):
    """One key's calls: accepted by its token, refused (401), open, and the max in any 1 s."""

    calls: int = 0
    unauthorized: int = 0

    def called(self, now: float, *, window: bool) -> None:
        self.calls += 1
        self.opened(now, window=window)

    def as_json(self) -> dict[str, int]:
        return {
            "calls": self.calls,
            "unauthorized": self.unauthorized,
            "max_calls_in_1s": self.max_calls_in_1s,
            "max_in_flight": self.max_in_flight,
        }


class Keys:
    """The accepted tokens and which of them are refused now."""

    def __init__(self, tokens: list[str]) -> None:
        self.by_id = {key_id(token): token for token in tokens}
        self.tokens = frozenset(tokens)
        self.refused: set[str] = set()

    def check(self, token: str, counts: dict[str, KeyCalls], now: float, *, window: bool) -> bool:
        """Whether `token` is accepted now; counted under its key when it is one of ours."""
        if token not in self.tokens:
            return False
        key = key_id(token)
        calls = counts.get(key) or counts.setdefault(key, KeyCalls())
        if key in self.refused:
            calls.unauthorized += 1
            return False
        calls.called(now, window=window)
        return True

    @staticmethod
    def answered(key: str, counts: dict[str, KeyCalls]) -> None:
        """A call `check` accepted under `key` has been answered (or dropped)."""
        calls = counts.get(key)
        if calls is not None and calls.in_flight > 0:
            calls.in_flight -= 1

    def set_refused(self, key: str, refused: bool) -> bool:
        """Refuse (or accept again) the key named `key`; False if there is no such key."""
        if key not in self.by_id:
            return False
        if refused:
            self.refused.add(key)
        else:
            self.refused.discard(key)
        return True
