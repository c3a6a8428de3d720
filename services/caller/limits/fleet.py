"""`--limit-scope fleet`: one `--qps`, `--concurrency` and `--tpm` shared by every caller of
a group.

Calls: all members pace on one wall-clock grid of slots `(1 + allowance) / q`
apart, and the member ranked r of N (member ids sorted) takes the slots
k ≡ r (mod N). Together they start at most one call per slot, so the upstream
sees the fleet's q however many callers there are, without any message per
call. Conversations: member r runs `concurrency // N` (+1 for the first
`concurrency % N` ranks) at once.

Convergence: members read the group (membership.py) every `poll_interval`
(0.5 s; every 0.05 s until a member first sees itself). A leaving member's
share is taken within one poll. A member calls
only while its view of the group is fresh (read less than `stale_after`,
1.5 s, ago): one whose reads stall (a starved CPU, an unreachable nsqd)
pauses rather than act on an old view. A joining member makes no call until
`join_hold` (`stale_after` + 0.25 s) after it first sees itself: by then
every member still calling has read a view that includes it and narrowed its
share, so a join never adds calls to a second. A member that first sees itself
alone, registered on every nsqd, does not hold: no member is calling then (one
that was would be registered there), and any that registers later sees it and
holds itself. While the members disagree,
each uses at most the share of the group it last saw: the sum stays at or
below the limit.
Members started with different limits use the smallest (0 = none).

Tokens (`--tpm` T): member r of N holds T/N of a sliding 60-s window and paces
its model calls at (T/N)/60 tokens a second (tokens.py says why both), with the
same join hold, staleness pause and convergence as the calls. A 429 with
`retry-after`/`x-ratelimit-reset-tokens` pauses the member that got it at once
and is published to the group (membership.py: a pause registration until it
ends): every member that reads it, within one poll, pauses its model calls as
long. A pause only takes calls away, so the shares still sum to at most T.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import httpx

from gpt4batch.common.logging import get_logger
from gpt4batch.common.nsq.registration import Node, Registration
from gpt4batch.services.caller.limits import metrics
from gpt4batch.services.caller.limits.base import (
    Gate,
    Limiter,
    LimitSettings,
    PacedLimiter,
    ProcessLimiter,
    publish_share,
)
from gpt4batch.services.caller.limits.membership import (
    Member,
    Pause,
    discover_nodes,
    new_member_id,
    read_members,
    topic_for,
)
from gpt4batch.services.caller.limits.tokens import TokenLimit
from gpt4batch.services.caller.pacer import SlotPacer

if TYPE_CHECKING:
    from gpt4batch.services.caller.settings import CallerSettings

log = get_logger("gpt4batch.limits")

#: Polls between two nsqlookupd `/nodes` queries (new nsqd nodes are registered on then).
_REDISCOVER_EVERY = 10
#: Seconds between reads while this member has not seen itself yet (its registrations
#: take a few ms to reach nsqd), at most `_FIRST_SIGHT_READS` of them: it applies the
#: group as soon as it is visible, not a whole `poll_interval` later.
_FIRST_SIGHT_POLL = 0.05
_FIRST_SIGHT_READS = 40


def _smallest(values: Sequence[float]) -> float:
    """The tightest limit, where 0 means none."""
    positive = [v for v in values if v > 0]
    return min(positive) if positive else 0.0


class FleetLimiter(PacedLimiter):
    scope = "fleet"

    def __init__(
        self,
        limits: LimitSettings,
        group: str,
        *,
        nsqd_tcp: Sequence[str] = (),
        lookupd_http: Sequence[str] = (),
        nsqd_http: Sequence[str] = (),
        auth_secret: str | None = None,
        poll_interval: float = 0.5,
        member_id: str | None = None,
    ) -> None:
        qps, concurrency, tpm = limits.qps, limits.concurrency, limits.tpm
        self.group = group
        self.topic = topic_for(group)
        self.me = Member(member_id or new_member_id(), qps, concurrency, tpm)
        self.nsqd_tcp = list(nsqd_tcp)
        self.lookupd_http = list(lookupd_http)
        self.nsqd_http = list(nsqd_http)
        self.auth_secret = auth_secret
        self.poll_interval = poll_interval
        self.stale_after = 3 * poll_interval
        self.join_hold = self.stale_after + 0.25
        self._view_time = -math.inf  # when the last view that was applied was read
        self.pacer = SlotPacer(qps, clock=time.time, strict=False)
        self.gate = Gate(0)
        self.members: list[str] = []
        self.rank = -1
        self.qps, self.concurrency, self.tpm = qps, concurrency, tpm
        # No share until this member sees itself in the group (model calls wait).
        self.tokens = TokenLimit(
            tpm,
            share=0,
            completion_estimate=limits.completion_estimate,
            on_pause=self._announce_pause,
            window=limits.tpm_window,
        )
        metrics.watch_tokens(self.scope, group, self.tokens)
        self._nodes: list[Node] = []
        self._pause_until = 0.0
        self._pause_tasks: set[asyncio.Task[None]] = set()
        self._active = asyncio.Event()
        self._seen_since: float | None = None
        self._registrations: dict[str, Registration] = {}
        self._task: asyncio.Task[None] | None = None
        self._limit_gauges(qps, concurrency)
        publish_share(0, 0)

    def _limit_gauges(self, qps: float, concurrency: int) -> None:
        metrics.LIMIT_QPS.labels(self.scope, self.group).set(qps)
        metrics.LIMIT_CONCURRENCY.labels(self.scope, self.group).set(concurrency)

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="limit-group")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._pause_tasks):
            task.cancel()
        await asyncio.gather(*self._pause_tasks, return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self._registrations.values()))
        self._registrations.clear()

    async def acquire(self, endpoint: str = "") -> None:
        while True:
            await self._active.wait()
            await super().acquire(endpoint)
            if not self._fresh():
                self._active.clear()  # the next fresh view sets it again
            if self._active.is_set():
                return

    def _fresh(self) -> bool:
        return time.monotonic() - self._view_time < self.stale_after

    @asynccontextmanager
    async def conversation(self) -> AsyncIterator[None]:
        async with self.gate.hold():
            yield

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=self.stale_after) as http:
            nodes: list[Node] = []
            polls = first_sight = 0
            while True:
                if not nodes or polls % _REDISCOVER_EVERY == 0:
                    found = discover_nodes(http, self.nsqd_tcp, self.lookupd_http, self.nsqd_http)
                    nodes = await found or nodes
                    self._register(nodes)
                    self._nodes = nodes
                polls += 1
                read_at = time.monotonic()
                view = await read_members(http, nodes, self.topic)
                if view is not None:
                    await self._apply(view.members, read_at, alone=view.alone(self.me.id))
                    paused = view.pause_until - time.time()
                    if paused > 0:
                        self.tokens.pause(paused)
                interval = self.poll_interval
                if self._seen_since is None and first_sight < _FIRST_SIGHT_READS:
                    first_sight += 1
                    interval = min(interval, _FIRST_SIGHT_POLL)
                await asyncio.sleep(max(0.0, read_at + interval - time.monotonic()))

    def _register(self, nodes: list[Node]) -> None:
        for node in nodes:
            if node.tcp not in self._registrations:
                registration = Registration(node, self.topic, self.me, self.auth_secret)
                registration.start()
                self._registrations[node.tcp] = registration

    async def _apply(self, seen: dict[str, Member], read_at: float, alone: bool = False) -> None:
        """Take this caller's share of what the group looks like now (`alone`: it is the
        only member, seen on every node)."""
        ids = sorted(seen)
        if ids != self.members:
            metrics.VIEW_CHANGES.inc()
            log.info("limit group changed", group=self.group, members=ids)
            self.members = ids
        metrics.MEMBERS.set(len(ids))
        if self.me.id not in seen:
            # Not visible (yet, or registrations lost): the others do not count us.
            self._seen_since = None
            self._active.clear()
            await self.gate.resize(0)
            self.tokens.set_share(self.tpm, 0)
            publish_share(0, 0)
            return
        self._view_time = read_at
        now = time.monotonic()
        if self._seen_since is None:  # visible to every read that starts from now on
            # Alone: nobody has a share to narrow, so the join hold is over already.
            self._seen_since = now - self.join_hold if alone else now
        if now - self._seen_since < self.join_hold:
            return  # the others may not have narrowed their shares yet
        n, rank = len(ids), ids.index(self.me.id)
        qps = _smallest([m.qps for m in seen.values()])
        concurrency = int(_smallest([m.concurrency for m in seen.values()]))
        tpm = int(_smallest([m.tpm for m in seen.values()]))
        if (qps, concurrency, tpm) != (self.qps, self.concurrency, self.tpm):
            log.warning("limit group's limits changed (the smallest wins)", qps=qps,
                        concurrency=concurrency, tpm=tpm)  # fmt: skip
            self.qps, self.concurrency, self.tpm = qps, concurrency, tpm
            self._limit_gauges(qps, concurrency)
        if qps != self.pacer.qps:
            self.pacer.set_qps(qps)
        self.pacer.assign(n, rank)
        self.rank = rank
        share = concurrency // n + (1 if rank < concurrency % n else 0)
        await self.gate.resize(share)
        self.tokens.set_share(tpm, tpm / n)
        publish_share(self.pacer.effective_qps, share, tpm / n)
        self._active.set()

    def _announce_pause(self, seconds: float) -> None:
        """Tell the group about a 429 pause: a pause registration on every nsqd until it ends."""
        until = time.time() + seconds
        if until <= self._pause_until + 0.5 or not self._nodes:
            return  # the pause announced already covers it
        self._pause_until = until
        task = asyncio.create_task(self._hold_pause(until, seconds), name="limit-pause")
        self._pause_tasks.add(task)
        task.add_done_callback(self._pause_tasks.discard)

    async def _hold_pause(self, until: float, seconds: float) -> None:
        pause = Pause(f"{self.me.id}~pause", until)
        registrations = [
            Registration(node, self.topic, pause, self.auth_secret) for node in self._nodes
        ]
        log.warning("upstream token limit reached: the group pauses its model calls",
                    group=self.group, seconds=round(seconds, 2))  # fmt: skip
        for registration in registrations:
            registration.start()
        try:
            await asyncio.sleep(seconds)
        finally:
            await asyncio.gather(*(r.close() for r in registrations))


def process_limiter(settings: CallerSettings, group: str = "") -> ProcessLimiter:
    """`--limit-scope process`: this process has all of -q, -g and --tpm."""
    return ProcessLimiter(LimitSettings.of(settings), group)


def build_limiter(settings: CallerSettings) -> Limiter:
    """The limiter `--limit-scope` asks for (process scope when there is no NSQ to share)."""
    group = settings.limit_group or settings.topic_prefix
    has_nsq = bool(settings.nsqd_tcp_address or settings.lookupd_http_address)
    if settings.limit_scope == "process" or not has_nsq:
        return process_limiter(settings, group)
    if settings.pacing == "window":
        log.warning("--pacing window is for one process: the fleet paces on the grid")
    secret = settings.nsq_auth_secret
    return FleetLimiter(
        LimitSettings.of(settings),
        group,
        nsqd_tcp=settings.nsqd_tcp_address,
        lookupd_http=settings.lookupd_http_address,
        nsqd_http=settings.nsqd_http_address,
        auth_secret=secret.get_secret_value() if secret else None,
    )
