"""Results larger than one NSQ message travel as pieces and are put back together.

The caller splits a ResultMessage's JSON into `ResultPart`s that each fit the
bus's message limit (works across machines: nothing but NSQ is shared). A
consumer of results (the sink, `run -n`) subscribes a `PartAssembler` to the
parts topic: every piece stays unfinished (touched by the bus) until all
pieces of its result are in, then the joined result goes through the normal
result handler and all pieces are finished together. A crash before that
requeues every piece, so nothing is lost and nothing is written twice.

Pieces that never make a whole (orphans) are bounded: see `PartAssembler`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from gpt4batch.common.bus import Delivery
from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.messages import ResultMessage, ResultPart

#: Most pieces one result may be split into; a consumer holds them all in flight
#: at once, so this stays well below the default max-in-flight (200).
MAX_PARTS = 64

#: Envelope of a piece besides its data (ids, hashes, JSON keys), with room to spare.
_ENVELOPE = 1024

Deliver = Callable[[ResultMessage, Delivery], Awaitable[None]]


class TooLarge(ValueError):
    """The result would need more than MAX_PARTS pieces."""


def split_result(result: ResultMessage, body: bytes, limit: int) -> list[ResultPart]:
    """`body` (the result's JSON) as pieces of at most `limit` bytes each, once encoded."""
    chunk = (limit - _ENVELOPE - 4 * len(result.record.id)) * 3 // 4
    if chunk <= 0:
        raise TooLarge(f"a {limit}-byte message limit leaves no room for a piece")
    count = -(-len(body) // chunk)
    if count > MAX_PARTS:
        raise TooLarge(
            f"result of {len(body)} bytes would need {count} pieces of {limit} bytes "
            f"(at most {MAX_PARTS})"
        )
    digest = hashlib.sha256(body).hexdigest()
    group = hashlib.sha256(f"{result.batch}\0{result.seq}\0{digest}".encode()).hexdigest()[:32]
    return [
        ResultPart(
            batch=result.batch,
            seq=result.seq,
            record_id=result.record.id,
            group=group,
            index=n,
            count=count,
            sha256=digest,
            data=base64.b64encode(body[n * chunk : (n + 1) * chunk]).decode("ascii"),
        )
        for n in range(count)
    ]


def held_limit(max_in_flight: int) -> int:
    """Pieces of unfinished results a consumer with `max_in_flight` holds at once: a
    quarter of its window (at most MAX_PARTS), so held pieces never take every slot
    (nor every slot of one nsqd's share) and a new piece can always arrive."""
    return max(1, min(MAX_PARTS, max_in_flight // 4))


@dataclass
class _Group:
    count: int
    sha256: str
    pieces: dict[int, bytes] = field(default_factory=dict)
    waiting: int = 0
    """Deliveries of this group held unfinished right now."""
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PartAssembler:
    """A handler of `ResultPart`s that calls `deliver` once per complete result.

    Bounded against orphans (pieces whose siblings never come, e.g. published by
    someone else): at most `max_held` pieces wait at once, the least recently
    added-to incomplete result is given back to make room for a new one, a piece
    waits at most `wait` s, and every give-back is a bounded requeue, so an
    incomplete result ends in `…dead` after the bus's max attempts.
    """

    def __init__(
        self, deliver: Deliver, *, wait: float = 120.0, max_held: int = held_limit(200)
    ) -> None:
        self.deliver = deliver
        self.wait = wait
        self.max_held = max_held
        self._groups: dict[str, _Group] = {}
        """Incomplete results, least recently added-to first."""

    async def handle(self, part: ResultPart, delivery: Delivery) -> None:
        if part.index >= part.count or part.count > MAX_PARTS:
            raise Poison(f"piece {part.index} of {part.count} of {part.group}: no such piece")
        group = self._groups.pop(part.group, None)
        if group is None:
            group = _Group(part.count, part.sha256)
        elif (part.count, part.sha256) != (group.count, group.sha256):
            self._groups[part.group] = group
            raise Poison(f"piece {part.index} of {part.group} does not match its group")
        self._groups[part.group] = group  # now the most recently added-to
        group.pieces[part.index] = base64.b64decode(part.data)
        if len(group.pieces) < group.count:
            self._make_room(part.group)
            await self._await_rest(part, group)
            return
        del self._groups[part.group]
        try:
            await self.deliver(self._joined(part, group), delivery)
        except BaseException as exc:
            self._give_back(group, f"result of {part.record_id} not written: {exc}")
            raise
        group.done.set_result(None)

    def _make_room(self, current: str) -> None:
        """Give back the least recently added-to other results until this piece fits."""
        held = sum(g.waiting for g in self._groups.values())
        for key in list(self._groups):
            if held < self.max_held:
                return
            if key == current:
                continue
            group = self._groups.pop(key)
            held -= group.waiting
            self._give_back(group, f"pieces of {key} given back to make room ({held} held)")

    @staticmethod
    def _give_back(group: _Group, reason: str) -> None:
        """Wake the group's waiting pieces with a bounded requeue."""
        group.done.set_exception(Requeue(reason, bounded=True))
        group.done.exception()  # retrieved: the waiters re-raise it

    async def _await_rest(self, part: ResultPart, group: _Group) -> None:
        """Hold this piece (unfinished) until the group is written, or give it back."""
        group.waiting += 1
        try:
            await asyncio.wait_for(asyncio.shield(group.done), self.wait)
        except TimeoutError:
            if self._groups.get(part.group) is group:
                group.pieces.pop(part.index, None)
                if not group.pieces:
                    del self._groups[part.group]
            raise Requeue(
                f"pieces of {part.record_id} missing after {self.wait:g} s", bounded=True
            ) from None
        finally:
            group.waiting -= 1

    @staticmethod
    def _joined(part: ResultPart, group: _Group) -> ResultMessage:
        body = b"".join(group.pieces[n] for n in range(group.count))
        if hashlib.sha256(body).hexdigest() != group.sha256:
            raise Poison(f"pieces of {part.record_id} do not add up to their sha256")
        return ResultMessage.model_validate_json(body)
