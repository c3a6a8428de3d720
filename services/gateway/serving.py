"""What the fleet's callers serve, as the gateway sees it when it validates a batch.

`--upstream-endpoints` says it outright. Otherwise the callers registered on
nsqd (common/nsq/callers.py) say it: an endpoint is served when every
registered caller serves it (an ask may go to any of them). With no caller
registered yet (or no nsqd answering) nothing is known: every endpoint is
accepted, chat lines are passed on whole, and a caller that cannot serve a
line answers it with an error result (`unsupported_endpoint`), never a call.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpt4batch.common.endpoints import CHAT, CONVERTING_KINDS
from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.admin import NsqdAdmin
from gpt4batch.common.nsq.callers import CallerInfo, read_callers

log = get_logger("gpt4batch.gateway")


@dataclass(frozen=True)
class Serving:
    """Endpoints the fleet serves (None: not known, all accepted), and whether chat lines
    must fit a chat-only upstream's asks (end with a user message of text)."""

    endpoints: frozenset[str] | None
    converts_chat: bool = False
    source: str = "nothing registered"

    def refusal(self, endpoint: str) -> str | None:
        """Why a batch for `endpoint` cannot run here (None: it can)."""
        if self.endpoints is None or endpoint in self.endpoints:
            return None
        served = ", ".join(sorted(self.endpoints)) or "nothing"
        return (
            f"The endpoint {endpoint} is not served by this gateway's upstream "
            f"({self.source} serve {served})."
        )


def from_override(endpoints: tuple[str, ...]) -> Serving:
    """`--upstream-endpoints`: only chat is a chat-only upstream (gpt4api.plus, chatgpt-service)."""
    return Serving(frozenset(endpoints), set(endpoints) == {CHAT}, "--upstream-endpoints: callers")


def from_callers(callers: list[CallerInfo]) -> Serving:
    if not callers:
        return Serving(None)
    served = frozenset.intersection(*(frozenset(c.endpoints) for c in callers))
    kinds = {k for c in callers for k in c.kind.split("+")}
    names = ", ".join(sorted(kinds))
    return Serving(served, bool(kinds & CONVERTING_KINDS), f"the registered callers ({names})")


class FleetServing:
    """Answers `now()` from the override, else from nsqd (`admin`; None: no NSQ)."""

    def __init__(
        self, override: tuple[str, ...], admin: NsqdAdmin | None, topic_prefix: str
    ) -> None:
        self.override = from_override(override) if override else None
        self.admin = admin
        self.prefix = topic_prefix
        self._said_unknown = False

    async def callers(self) -> list[CallerInfo] | None:
        """The callers registered now (None: no NSQ, or no nsqd answered); their
        `fleet_concurrency` is the fleet's."""
        if self.admin is None:
            return None
        try:
            return await read_callers(self.admin, self.prefix)
        except Exception as exc:  # nsqlookupd/nsqd away: as if nothing registered
            log.debug("cannot read the registered callers", error=str(exc))
            return None

    async def now(self) -> Serving:
        if self.override is not None:
            return self.override
        serving = from_callers(await self.callers() or [])
        if serving.endpoints is None and not self._said_unknown:
            self._said_unknown = True
            log.warning(
                "no caller is registered on nsqd: batches for every endpoint are accepted, "
                "and a caller that cannot serve one fails its lines (--upstream-endpoints "
                "says what the upstream serves)"
            )
        return serving
