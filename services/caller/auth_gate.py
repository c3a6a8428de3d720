"""The auth gate: a refused token stops the caller instead of failing every ask.

A 401/403 from the upstream is not a record's failure: every other ask would
get the same answer (a 1,000-record batch would fail for 17 minutes). So the
first refusal closes the gate: the ask goes back to the bus (never published
as a result, never journaled as done), the service stops consuming (RDY 0),
logs once, sets `gpt4batch_caller_auth_refused` to 1 and fails its readiness
check. Every `retry_interval` s it reloads the token (a new `gpt4batch auth`
or secret is picked up) and takes one ask as the probe; the first ask the
upstream answers without a refusal opens the gate again.

`gpt4batch run` uses the same gate with `on_close` stopping the run (exit 2),
and `prove_first`: until the upstream has answered one conversation without a
refusal, only one conversation calls at a time (`turn`), so a wrong token costs
one call, not one per conversation in flight (`-g`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from prometheus_client import Gauge

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import IErr
from gpt4batch.common.metrics import NAMESPACE

log = get_logger("gpt4batch.caller")

#: Upstream statuses that mean "this token is not accepted", not "this record is bad".
AUTH_STATUSES = frozenset({401, 403})

AUTH_REFUSED = Gauge(
    f"{NAMESPACE}_caller_auth_refused",
    "1 while the upstream refuses this caller's token (the caller takes no asks), else 0.",
)


def _upstream_answered(status: int | None) -> bool:
    """Whether a failing ask's status is the upstream's answer (an HTTP status, or a 200
    whose `code` is not 0), not one of our own codes for no answer (597 refused, 598…)."""
    return status is not None and (
        status < IErrCode.BATCH_CANCELLED or status == IErrCode.CODE_NOT_ZERO
    )


def token_source(
    explicit: object,
    credentials: Path,
    flag: str = "--access-token",
    token_file: Path | None = None,
) -> str:
    """Where the token came from, for the one-line error (never the token itself)."""
    if explicit:
        return flag
    if token_file:
        return f"--access-token-file {token_file.expanduser()}"
    if os.environ.get("GPT4BATCH_ACCESS_TOKEN"):
        return "GPT4BATCH_ACCESS_TOKEN"
    return f"the credentials file {credentials.expanduser()}"


class AuthGate:
    """Open while the token works; closed (no asks taken) after a 401/403."""

    def __init__(
        self,
        source: str,
        *,
        retry_interval: float = 60.0,
        on_close: Callable[[IErr], None] | None = None,
        on_probe: Callable[[], None] | None = None,
        on_open: Callable[[], None] | None = None,
        prove_first: bool = False,
        refused_gauge: Gauge | None = AUTH_REFUSED,
        refused_text: str = "upstream refused the token; taking no asks until it is accepted",
        accepted_text: str = "upstream accepts the token again; taking asks",
    ) -> None:
        self.source = source
        self._gauge = refused_gauge
        self._refused_text = refused_text
        self._accepted_text = accepted_text
        self.retry_interval = retry_interval
        self.on_close = on_close
        self.on_probe = on_probe
        self.on_open = on_open
        self.refusal: IErr | None = None
        self.probing = False
        self._timer: asyncio.TimerHandle | None = None
        #: False until the upstream answered a call with this token (`prove_first`).
        self.proven = not prove_first
        self._proof_running = False
        self._proof_settled: asyncio.Event | None = None
        self._set_gauge(0)

    def _set_gauge(self, value: int) -> None:
        if self._gauge is not None:
            self._gauge.set(value)

    @property
    def is_open(self) -> bool:
        return self.refusal is None

    def admits(self) -> bool:
        """Whether an ask may call the upstream now (closed: only the probe, one at a time)."""
        if self.refusal is None:
            return True
        if self.probing:
            self.probing = False  # this ask is the probe; the next waits for its answer
            return True
        return False

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Around a conversation: while the token is unproven, one conversation runs (the
        proof) and the others wait for its outcome; then every one goes at once."""
        proof = False
        while not self.proven and self.refusal is None:
            if not self._proof_running:
                self._proof_running = proof = True
                break
            if self._proof_settled is None:
                self._proof_settled = asyncio.Event()
            await self._proof_settled.wait()
        try:
            yield
        finally:
            if proof:  # proven, refused, or no answer (then the next one tries)
                self._proof_running = False
                self._wake_waiters()

    def _wake_waiters(self) -> None:
        if self._proof_settled is not None:
            self._proof_settled.set()
            self._proof_settled = None

    def observe(self, status: int | None, error: IErr | None) -> bool:
        """Record an ask's outcome (`status`: the upstream's failing HTTP status, if any);
        True when the upstream refused the token (the ask must go back, unanswered)."""
        if status in AUTH_STATUSES and error is not None:
            self.close(error)
            self._wake_waiters()
            return True
        if not self.proven and (error is None or _upstream_answered(status)):
            self.proven = True  # the upstream answered this token without refusing it
            self._wake_waiters()
        if self.refusal is not None:
            self.open()
        return False

    def close(self, error: IErr) -> None:
        first = self.refusal is None
        self.refusal = error
        self._set_gauge(1)
        if first:
            log.error(
                self._refused_text,
                status=error.code,
                source=self.source,
                retry_in=self.retry_interval,
            )
        if self.on_close is not None:
            self.on_close(error)
        self._schedule_probe()

    def open(self) -> None:
        self.refusal = None
        self.probing = False
        self._set_gauge(0)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        log.info(self._accepted_text, source=self.source)
        if self.on_open is not None:
            self.on_open()

    def _schedule_probe(self) -> None:
        if self._timer is not None or self.retry_interval <= 0:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        self._timer = loop.call_later(self.retry_interval, self._probe)

    def _probe(self) -> None:
        self._timer = None
        if self.refusal is None:
            return
        self.probing = True
        if self.on_probe is not None:
            self.on_probe()

    def readiness(self) -> str | None:
        """None when ready; else why not (the readiness check's answer)."""
        if self.refusal is None:
            return None
        return f"upstream refused the token from {self.source} ({self.refusal.code})"
