"""The account pool: which account runs a conversation, and which are in the rotation.

Each account has its own token, its own limiter (in a fleet, the limit group
`<group>.<account name>`, so its --qps/--concurrency/--tpm hold across every
caller) and its own auth gate. A conversation runs whole on the account chosen
for it: its conversation ids and uploads belong there. Nothing of a conversation
is carried between deliveries (a redelivered ask starts again from its first
ask), yet the pool remembers the account of each (batch, seq) it chose, so a
redelivery to this caller goes to the same account while that one is in the
rotation.

Choice: among the accounts in the rotation, the one with the fewest
conversations in flight for its weight (its QPS, else its TPM, else its
concurrency), so each account's limiter has work waiting in proportion to what
it may start. An account whose token is refused (401/403) or whose budget is
spent leaves the rotation, logged once; a refused one is retried every
--auth-retry-interval (its token re-read: a rotated secret counts) with one
conversation as the probe, and comes back when the upstream accepts it.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import Gauge

from gpt4batch.common.errors import ConfigError, IErrCode
from gpt4batch.common.logging import get_logger
from gpt4batch.common.messages import IErr
from gpt4batch.common.upstreams import ConversationClient, UpstreamConfig
from gpt4batch.common.usage import Prices
from gpt4batch.services.caller.accounts.config import AccountSpec
from gpt4batch.services.caller.auth_gate import AuthGate
from gpt4batch.services.caller.budget import Budget
from gpt4batch.services.caller.limits import Limiter
from gpt4batch.services.caller.limits.base import Gate
from gpt4batch.services.caller.metrics import ACCOUNT_IN_FLIGHT, ACCOUNT_REFUSED

if TYPE_CHECKING:
    from gpt4batch.common.messages import AskMessage
    from gpt4batch.services.caller.conversation import ConversationRunner, Outcome
    from gpt4batch.services.caller.settings import CallerSettings

log = get_logger("gpt4batch.caller")

#: A record no account could run: every account's `budget_usd` is reached.
BUDGETS_REACHED = IErr(
    code=int(IErrCode.BUDGET_REACHED),
    message="budget reached: every account's budget_usd (--accounts) is spent or reserved; not run",
)

#: How many (batch, seq) -> account choices a caller remembers (redeliveries go back there).
STICKY_MEMORY = 100_000


@dataclass(eq=False)
class Account:
    """One account in use: its upstream config (with the token), limiter and auth gate."""

    spec: AccountSpec
    config: UpstreamConfig
    limiter: Limiter
    gate: AuthGate
    in_flight: int = 0
    #: Its upstream clients by kind (dropped when its token is re-read).
    clients: dict[str, ConversationClient] = field(default_factory=dict)
    prices: Prices = field(default_factory=Prices)
    #: Its `concurrency` in this process (the process limiter leaves conversations to the
    #: bus's max-in-flight, which is the caller's -g, not the account's).
    places: Gate = field(default_factory=lambda: Gate(1))
    #: How much work it takes at once (`account_weight`): the choice keeps conversations
    #: in flight in proportion to it.
    weight: float = 1.0
    #: Its `budget_usd` (None: none): once spent + reserved would pass it, it leaves.
    budget: Budget | None = None
    _in_flight_gauge: Gauge = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._in_flight_gauge = ACCOUNT_IN_FLIGHT.labels(self.spec.name)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def budget_reached(self) -> bool:
        return self.budget is not None and self.budget.reached

    def in_rotation(self) -> bool:
        return self.gate.is_open and not self.budget_reached

    def reserve(self, estimate_usd: float) -> bool:
        """Reserve a conversation's estimated cost on the account's budget; False (the
        account leaves the rotation, logged once) when it would pass it."""
        budget = self.budget
        if budget is None:
            return True
        reached = budget.reached
        if budget.reserve(estimate_usd):
            return True
        if not reached:
            log.warning(
                "account budget reached; it leaves the rotation",
                account=self.name,
                spent_usd=round(budget.spent_usd, 6),
                reserved_usd=round(budget.reserved_usd, 6),
                budget_usd=budget.limit_usd,
            )
        return False

    def settle(self, estimate_usd: float, cost_usd: float) -> None:
        if self.budget is not None:
            self.budget.settle(estimate_usd, cost_usd)


class AccountPool:
    """The accounts of one caller, and the choice of one per conversation."""

    def __init__(
        self,
        accounts: list[Account],
        *,
        on_all_out: Callable[[IErr], None] | None = None,
        on_back: Callable[[], None] | None = None,
        sticky_memory: int = STICKY_MEMORY,
        prove_first: bool = False,
    ) -> None:
        self.prove_first = prove_first
        self.accounts = accounts
        self.on_all_out = on_all_out
        self.on_back = on_back
        self._sticky: OrderedDict[tuple[str, int], Account] = OrderedDict()
        self._sticky_memory = sticky_memory

    @classmethod
    def build(
        cls,
        specs: list[AccountSpec],
        settings: CallerSettings,
        limiter_for: Callable[[CallerSettings], Limiter],
        **kwargs: object,
    ) -> AccountPool:
        """One account per spec: its config (token read now) and its own limit group."""
        base = settings.upstream_config_without_token()
        group = settings.limit_group or settings.topic_prefix
        where = f"--accounts {settings.accounts}"
        pool = cls([], **kwargs)  # type: ignore[arg-type]
        for spec in specs:
            config = account_config(base, spec, where)
            limits: dict[str, object] = {"limit_group": f"{group}.{spec.name}"}
            for name in ("qps", "concurrency", "tpm"):
                value = getattr(spec, name)
                if value is not None and name in type(settings).model_fields:
                    limits[name] = value
            limiter = limiter_for(settings.model_copy(update=limits))
            gate = AuthGate(
                spec.token_source(),
                retry_interval=settings.auth_retry_interval,
                prove_first=pool.prove_first,
                refused_gauge=ACCOUNT_REFUSED.labels(spec.name),
                refused_text="upstream refused the account's token; it leaves the rotation",
                accepted_text="upstream accepts the account's token again; back in the rotation",
            )
            account = Account(
                spec,
                config,
                limiter,
                gate,
                prices=account_prices(spec, settings.prices()),
                budget=None if spec.budget_usd is None else Budget(spec.budget_usd),
                places=Gate(spec.concurrency or settings.concurrency),
                weight=account_weight(spec, settings),
            )
            gate.on_close = pool._closed
            gate.on_probe = lambda account=account: pool._reload(account, where)
            gate.on_open = pool._opened
            pool.accounts.append(account)
        return pool

    async def start(self) -> None:
        for account in self.accounts:
            await account.limiter.start()

    async def close(self) -> None:
        for account in self.accounts:
            await account.limiter.close()

    def choose(self, batch: str, seq: int) -> Account | None:
        """The account to run (batch, seq) on now; None while none is in the rotation."""
        key = (batch, seq)
        chosen = self._sticky.get(key)
        if chosen is None or not chosen.in_rotation():
            chosen = self._probe() or self._least_busy()
            if chosen is None:
                return None
            self._sticky[key] = chosen
            if len(self._sticky) > self._sticky_memory:
                self._sticky.popitem(last=False)
        return chosen

    def _probe(self) -> Account | None:
        """A refused account whose retry is due: this conversation tries its token."""
        for account in self.accounts:
            if not account.budget_reached and account.gate.probing and account.gate.admits():
                return account
        return None

    def _least_busy(self) -> Account | None:
        best: Account | None = None
        best_load = 0.0
        for account in self.accounts:
            if account.in_rotation():
                load = (account.in_flight + 1) / account.weight
                if best is None or load < best_load:
                    best, best_load = account, load
        return best

    async def converse(
        self, account: Account, runner: ConversationRunner, msg: AskMessage
    ) -> Outcome | None:
        """`msg`'s conversation run on `account`: its place held, its estimated cost reserved
        on its budget and settled; None when its budget cannot take it (it has left)."""
        estimate = 0.0 if account.budget is None else runner.estimate_cost(msg, account.config.kind)
        if not account.reserve(estimate):
            return None
        outcome: Outcome | None = None
        try:
            async with self.running(account):
                outcome = await runner.run(msg)
        finally:
            account.settle(estimate, 0.0 if outcome is None else outcome.usage.cost_usd)
        return outcome

    @asynccontextmanager
    async def running(self, account: Account) -> AsyncIterator[None]:
        """Count a conversation on `account` and hold its conversation place."""
        account.in_flight += 1
        account._in_flight_gauge.inc()
        try:
            async with account.places.hold(), account.limiter.conversation():
                yield
        finally:
            account.in_flight -= 1
            account._in_flight_gauge.dec()

    def budgets_reached(self) -> bool:
        """Whether every account's budget is reached (no account will run anything more)."""
        return all(account.budget_reached for account in self.accounts)

    def any_in_rotation(self) -> bool:
        return any(account.in_rotation() for account in self.accounts)

    def _closed(self, error: IErr) -> None:
        if not self.any_in_rotation() and self.on_all_out is not None:
            self.on_all_out(error)

    def _opened(self) -> None:
        if self.on_back is not None:
            self.on_back()

    def _reload(self, account: Account, where: str) -> None:
        """Before a refused account's probe: read its token again (a rotated secret counts)."""
        try:
            token = account.spec.token(where)
        except ConfigError as exc:
            log.warning("cannot reload the account's token", account=account.name, error=str(exc))
            return
        account.config = account.config.model_copy(update={"access_token": token})
        account.clients.clear()

    def secret_files(self) -> list[Path]:
        """The accounts' token files: never uploaded, whatever an ask names."""
        return [a.spec.token_file for a in self.accounts if a.spec.token_file is not None]


def account_weight(spec: AccountSpec, settings: CallerSettings) -> float:
    """Its QPS, else its TPM / 1000, else its concurrency (each the caller's where the
    account leaves it out): what bounds how much work the account can take at once."""
    tpm = spec.tpm if spec.tpm is not None else getattr(settings, "tpm", 0)
    for value in (
        spec.qps if spec.qps is not None else settings.qps,
        (tpm or 0) / 1000,
        spec.concurrency or settings.concurrency,
    ):
        if value:
            return float(value)
    return 1.0


def account_prices(spec: AccountSpec, default: Prices) -> Prices:
    """The account's prices; a price it leaves out is the caller's (`--input-usd-per-1m`…)."""
    return Prices(
        default.input_usd_per_1m if spec.input_usd_per_1m is None else spec.input_usd_per_1m,
        default.output_usd_per_1m if spec.output_usd_per_1m is None else spec.output_usd_per_1m,
        default.usd_per_call if spec.usd_per_call is None else spec.usd_per_call,
    )


def account_config(base: UpstreamConfig, spec: AccountSpec, where: str) -> UpstreamConfig:
    """The caller's upstream config with the account's upstream, URL and token."""
    update: dict[str, object] = {"access_token": spec.token(where)}
    if spec.upstream is not None:
        update["kind"] = spec.upstream
    if spec.base_url is not None:
        update["base_url"] = spec.base_url
    config = base.model_copy(update=update)
    try:
        config.check_urls()
    except ConfigError as exc:
        raise ConfigError(f"{where}: account {spec.name!r}: base_url: {exc}") from None
    return config


def refused_midway(outcome: Outcome, account: str, asks: int) -> None:
    """The record of a conversation whose account's token was refused after some of its asks
    were answered: it keeps those answers and fails (iErr 401/403), for its conversation
    belongs to that account and running it again elsewhere would pay those asks twice."""
    assert outcome.error is not None
    outcome.error = IErr(
        code=outcome.error.code,
        message=f"{outcome.error.message} (account {account}'s token refused after "
        f"{len(outcome.answers)} of {asks} asks; not moved to another account, where the "
        "answered asks would be paid again)",
    )
