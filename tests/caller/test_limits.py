"""Pacing on planned slots, slot shares, the resizable gate, choosing the limiter, and when a
joining fleet member holds."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from gpt4batch.common.nsq.registration import Node
from gpt4batch.services.caller.limits import (
    FleetLimiter,
    ProcessLimiter,
    build_limiter,
    fleet,
    membership,
)
from gpt4batch.services.caller.limits.base import Gate, LimitSettings
from gpt4batch.services.caller.limits.membership import GroupView, Member
from gpt4batch.services.caller.pacer import WINDOW_GAP, SlotPacer
from gpt4batch.services.caller.settings import CallerSettings


class VirtualTime:
    """A clock that only moves when a pacer sleeps, by the wait plus a chosen overshoot."""

    def __init__(self, overshoot: Callable[[int], float] = lambda n: 0.0) -> None:
        self.now = 1000.0
        self.sleeps = 0
        self.overshoot = overshoot

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.now += delay + self.overshoot(self.sleeps)
        self.sleeps += 1
        await asyncio.sleep(0)


def run_calls(pacer: SlotPacer, t: VirtualTime, n: int) -> list[float]:
    starts: list[float] = []

    async def call() -> None:
        await pacer.acquire("chat")
        starts.append(t.now)

    async def scenario() -> None:
        await asyncio.gather(*(call() for _ in range(n)))

    asyncio.run(scenario())
    return starts


def paced(qps: float, t: VirtualTime) -> SlotPacer:
    return SlotPacer(qps, clock=t.clock, sleep=t.sleep)


def test_timer_overshoot_does_not_accumulate_into_the_rate() -> None:
    t = VirtualTime(overshoot=lambda n: 0.0015)  # every sleep wakes 1.5 ms late
    pacer = paced(100, t)
    starts = run_calls(pacer, t, 500)
    rate = (len(starts) - 1) / (starts[-1] - starts[0])
    # Scheduling from the previous actual start gave 1 / (interval + 1.5 ms) = 88.1/s.
    assert rate > 0.99 * pacer.effective_qps
    assert pacer.skipped == 0


def test_after_a_stall_no_burst_and_never_q_plus_one_in_a_second() -> None:
    t = VirtualTime(overshoot=lambda n: 0.3 if n == 20 else 0.001)  # one 300 ms stall
    pacer = paced(20, t)
    starts = run_calls(pacer, t, 80)
    assert min(b - a for a, b in zip(starts, starts[2:], strict=False)) > pacer.interval / 2
    assert min(b - a for a, b in zip(starts, starts[20:], strict=False)) > 1.0
    # The grid is kept: after the stall calls go on slots again (the window guard holds the
    # odd one that would crowd a second), not at the stall's end + k·interval.
    on_grid = round(0.001 / pacer.interval, 3)
    off_grid = [s for s in starts[25:] if round((s / pacer.interval) % 1, 3) != on_grid]
    assert len(off_grid) <= 2, off_grid


def test_window_pacing_lets_q_go_together_but_never_q_plus_one_in_a_window() -> None:
    t = VirtualTime(overshoot=lambda n: 0.3 if n == 50 else 0.001)  # one 300 ms stall
    pacer = SlotPacer(20, clock=t.clock, sleep=t.sleep, pacing="window")
    starts = run_calls(pacer, t, 100)
    window = 20 * pacer.interval  # 1 s plus the allowance
    assert min(b - a for a, b in zip(starts, starts[20:], strict=False)) >= window - 1e-9
    assert min(b - a for a, b in itertools.pairwise(starts)) >= WINDOW_GAP * pacer.interval
    # The first q go within a quarter second, not one per slot over a second...
    assert starts[19] - starts[0] < 20 * (WINDOW_GAP * pacer.interval + 0.001) + 1e-9
    # ...so the batch starts its last call sooner than the grid (99 slots), stall and all.
    assert starts[-1] - starts[0] < 99 * pacer.interval


def test_window_pacing_is_for_one_process_only() -> None:
    with pytest.raises(ValueError, match="fleet"):
        SlotPacer(20, strict=False, pacing="window")
    settings = CallerSettings(access_token="x", pacing="window")
    limiter = build_limiter(settings)
    assert isinstance(limiter, ProcessLimiter) and limiter.pacer.pacing == "window"
    nsq = {"nsqd_tcp_address": ["127.0.0.1:4150"], "access_token": "x", "pacing": "window"}
    fleet = build_limiter(CallerSettings(**nsq))
    assert isinstance(fleet, FleetLimiter) and fleet.pacer.pacing == "grid"


def test_a_fleet_member_gives_a_late_slot_up() -> None:
    t = VirtualTime(overshoot=lambda n: 0.03 if n == 10 else 0.001)  # one wake-up 30 ms late
    pacer = SlotPacer(20, clock=t.clock, sleep=t.sleep, strict=False)
    starts = run_calls(pacer, t, 40)
    assert pacer.skipped == 1
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= pacer.interval - pacer.late_tolerance - 1e-9


def test_shares_of_one_grid_never_share_a_slot_and_sum_to_the_limit() -> None:
    # Real time: three pacers sleeping at once on one clock (as three callers on one grid).
    pacers = [SlotPacer(30, strict=False) for _ in range(3)]
    for rank, pacer in enumerate(pacers):
        pacer.assign(3, rank)
    starts: list[float] = []

    async def call(pacer: SlotPacer) -> None:
        await pacer.acquire()
        starts.append(pacer.clock())

    async def scenario() -> None:
        await asyncio.gather(*(call(p) for p in pacers for _ in range(30)))

    asyncio.run(scenario())
    starts.sort()
    gap = pacers[0].interval - pacers[0].late_tolerance
    assert min(b - a for a, b in itertools.pairwise(starts)) > gap
    # A fleet member may start up to half a slot late: at most q + 1 in any second.
    assert min(b - a for a, b in zip(starts, starts[31:], strict=False)) > 1.0
    assert abs(sum(p.effective_qps for p in pacers) - pacers[0].qps / 1.01) < 1e-6


def test_gate_resizes_while_held() -> None:
    async def scenario() -> list[int]:
        gate = Gate(1)
        running: list[int] = []

        async def conversation() -> None:
            async with gate.hold():
                running.append(gate.running)
                await asyncio.sleep(0.01)

        tasks = [asyncio.create_task(conversation()) for _ in range(4)]
        await asyncio.sleep(0)
        await gate.resize(3)
        await asyncio.gather(*tasks)
        return running

    running = asyncio.run(scenario())
    assert max(running) == 3 and running[0] == 1


def test_fleet_scope_is_the_default_when_there_is_nsq_to_share() -> None:
    nsq = {"nsqd_tcp_address": ["127.0.0.1:4150"], "access_token": "x"}
    limiter = build_limiter(CallerSettings(**nsq))
    assert isinstance(limiter, FleetLimiter) and limiter.topic == "gpt4batch.limits#ephemeral"
    grouped = build_limiter(CallerSettings(**nsq, limit_group="acct-1"))
    assert isinstance(grouped, FleetLimiter) and grouped.group == "acct-1"
    alone = build_limiter(CallerSettings(**nsq, limit_scope="process"))
    assert isinstance(alone, ProcessLimiter)
    assert isinstance(build_limiter(CallerSettings(access_token="x")), ProcessLimiter)


def test_a_member_alone_on_every_node_does_not_hold() -> None:
    """The join hold is for the members already calling: one that first sees itself alone
    on every nsqd takes its share at once; one that sees another member (or is not yet
    registered on every node) holds, as before."""
    limits = LimitSettings(qps=10, concurrency=4)

    async def scenario() -> None:
        now = time.monotonic()
        alone = FleetLimiter(limits, "g", member_id="a")
        await alone._apply({"a": alone.me}, now, alone=True)
        assert alone._active.is_set() and alone.gate.capacity == 4
        joining = FleetLimiter(limits, "g", member_id="b")
        await joining._apply({"a": alone.me, "b": joining.me}, now)
        assert not joining._active.is_set() and joining.gate.capacity == 0
        partly = FleetLimiter(limits, "g", member_id="c")
        await partly._apply({"c": partly.me}, now, alone=False)
        assert not partly._active.is_set()

    asyncio.run(scenario())


def test_a_member_is_alone_only_when_registered_on_every_node_with_no_other(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    me = Member("a", 10, 4).agent()
    other = Member("b", 10, 4).agent()
    nodes = [Node("n1:4150", "n1:4151"), Node("n2:4150", "n2:4151")]

    def view(*by_node: list[tuple[str, str]] | None) -> GroupView:
        async def answers(*args: Any) -> list[list[tuple[str, str]]] | None:
            found = [clients for clients in by_node if clients is not None]
            return found or None

        monkeypatch.setattr(membership, "registered_by_node", answers)
        read = asyncio.run(membership.read_members(httpx.AsyncClient(), nodes, "g"))
        assert read is not None
        return read

    assert view([("a", me)], [("a", me)]).alone("a")
    assert not view([("a", me)], []).alone("a")  # not yet registered on n2
    assert not view([("a", me)], None).alone("a")  # n2 did not answer: unknown
    assert not view([("a", me)], [("a", me), ("b", other)]).alone("a")


def test_a_member_reads_again_at_once_until_it_sees_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its registration reaches nsqd a few ms after the first read: the member reads again
    soon after, not a whole poll interval (here a minute) later."""
    limits = LimitSettings(qps=10, concurrency=4)
    limiter = FleetLimiter(limits, "g", nsqd_tcp=["n1:4150"], member_id="a", poll_interval=60)
    node = Node("n1:4150", "n1:4151")
    reads: list[GroupView] = []

    class Registered:
        def __init__(self, *args: Any) -> None: ...

        def start(self) -> None: ...

        async def close(self) -> None: ...

    async def nodes(*args: Any) -> list[Node]:
        return [node]

    async def read(*args: Any) -> GroupView:
        seen = {"a": limiter.me} if reads else {}  # not visible at the first read
        reads.append(GroupView(seen, everywhere=set(seen)))
        return reads[-1]

    monkeypatch.setattr(fleet, "Registration", Registered)
    monkeypatch.setattr(fleet, "discover_nodes", nodes)
    monkeypatch.setattr(fleet, "read_members", read)

    async def scenario() -> None:
        await limiter.start()
        try:
            await asyncio.wait_for(limiter._active.wait(), 30)  # a hang fails, not a timer
        finally:
            await limiter.close()

    asyncio.run(scenario())
    assert len(reads) == 2 and limiter.gate.capacity == 4
