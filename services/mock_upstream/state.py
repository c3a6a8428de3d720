"""What the simulator remembers: conversations, counters, the QPS window, randomness."""

from __future__ import annotations

import math
import random
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field

from gpt4batch.services.mock_upstream.keys import KeyCalls, Keys, OpenCalls
from gpt4batch.services.mock_upstream.options import FAULT_KINDS, Options
from gpt4batch.services.mock_upstream.tpm import KeyTokens


@dataclass
class Stats(OpenCalls):
    """Counters served by `GET /stats` (calls open and the max in any 1 s: `OpenCalls`)."""

    calls: Counter[str] = field(default_factory=Counter)
    chain_errors: int = 0
    foreign_conversation: int = 0
    """Calls in a conversation another key began (answered 404)."""
    unauthorized: int = 0
    rate_limited: int = 0
    not_found: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    faulted_calls: Counter[str] = field(default_factory=Counter)
    """Calls answered with an injected fault, per endpoint (never paid for)."""
    key_calls: dict[str, KeyCalls] = field(default_factory=dict)
    """Calls per key (keys.py), by key id."""
    key_tokens: dict[str, KeyTokens] = field(default_factory=dict)
    """Tokens taken by the OpenAI endpoints' calls, per key id (tpm.py)."""
    first_call_at: float | None = None
    last_call_at: float | None = None
    """Wall-clock time (Unix s) the first and the latest API call started."""

    def started(self, endpoint: str, now: float, *, window: bool = True) -> None:
        """Count a call; API calls (`window`) also feed the exact max calls in any 1 s window."""
        self.calls[endpoint] += 1
        self.opened(now, window=window)
        if window:
            self.last_call_at = time.time()
            if self.first_call_at is None:
                self.first_call_at = self.last_call_at

    def as_json(self) -> dict[str, object]:
        return {
            "calls": dict(self.calls),
            "total_calls": sum(self.calls.values()),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "max_calls_in_1s": self.max_calls_in_1s,
            "chain_errors": self.chain_errors,
            "foreign_conversation": self.foreign_conversation,
            "unauthorized": self.unauthorized,
            "rate_limited": self.rate_limited,
            "not_found": self.not_found,
            "faults": {k: self.faults[k] for k in FAULT_KINDS},
            "faulted_calls": dict(self.faulted_calls),
            "key_calls": {key: calls.as_json() for key, calls in self.key_calls.items()},
            "key_tokens": {key: tokens.as_json() for key, tokens in self.key_tokens.items()},
            "first_call_at": self.first_call_at,
            "last_call_at": self.last_call_at,
        }


@dataclass
class Conversation:
    """A conversation the simulator issued; `last_message_id` is what chains next."""

    real_id: str
    last_message_id: str | None = None
    key: str | None = None  # key id of the token that began it (keys.py)


class SimState:
    """Everything mutable; one instance per app, touched only on the event loop."""

    def __init__(self, options: Options) -> None:
        self.options = options
        self.rng = random.Random(options.seed)
        self.stats = Stats()
        self.conversations: dict[str, Conversation] = {}
        self.internal: dict[str, str | None] = {}  # internal id -> real id once chatted
        self.accepted: deque[float] = deque()  # accepted call starts, for the QPS limit
        self.files: dict[str, str] = {}  # download id -> advertised name
        self.keys = Keys([options.token, *options.also_tokens])

    def accepts(self, token: str, now: float, *, window: bool = True) -> bool:
        """Whether `token` is one of the keys and not refused now (counted per key)."""
        return self.keys.check(token, self.stats.key_calls, now, window=window)

    def reset(self) -> None:
        self.stats = Stats()
        self.accepted.clear()

    def new_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def short_id(self, n: int = 22) -> str:
        alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz123456789"
        return "".join(self.rng.choices(alphabet, k=n))

    def over_qps(self, now: float) -> float | None:
        """Seconds until a slot frees if this call exceeds `--qps`, else None (and count it)."""
        qps = self.options.qps
        if qps <= 0:
            return None
        window = self.accepted
        while window and window[0] <= now - 1.0:
            window.popleft()
        if len(window) >= qps:
            return window[0] + 1.0 - now
        window.append(now)
        return None

    def pick_fault(self) -> str | None:
        for kind, rate in self.options.fault_rates().items():
            if rate > 0 and self.rng.random() < rate:
                return kind
        return None

    def delay(self) -> float:
        """Seconds to wait before answering: fixed + uniform jitter + log-normal."""
        o = self.options
        ms = o.latency_ms
        if o.jitter_ms > 0:
            ms += self.rng.uniform(0, o.jitter_ms)
        if o.lognormal_median_ms > 0:
            ms += self.rng.lognormvariate(math.log(o.lognormal_median_ms), o.lognormal_sigma)
        return ms / 1000.0


def now() -> float:
    return time.monotonic()
