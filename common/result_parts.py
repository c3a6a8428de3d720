"""Results larger than one NSQ message travel as pieces and are put back together.

The caller splits a ResultMessage's JSON into `ResultPart`s that each fit the
bus's message limit (works across machines: nothing but NSQ is shared). A
consumer of results (the sink, `run -n`) subscribes a `PartAssembler` to the
parts topic: every piece stays unfinished (touched by the bus) until all
pieces of its result are in, then the joined result goes through the normal
result handler and all pieces are finished together. A crash before that
requeues every piece, so nothing is lost and nothing is written twice.
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


@dataclass
class _Group:
    count: int
    sha256: str
    pieces: dict[int, bytes] = field(default_factory=dict)
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class PartAssembler:
    """A handler of `ResultPart`s that calls `deliver` once per complete result."""

    def __init__(self, deliver: Deliver, *, wait: float = 120.0) -> None:
        self.deliver = deliver
        self.wait = wait
        self._groups: dict[str, _Group] = {}

    async def handle(self, part: ResultPart, delivery: Delivery) -> None:
        group = self._groups.get(part.group)
        if group is None:
            group = self._groups[part.group] = _Group(part.count, part.sha256)
        if (part.count, part.sha256) != (group.count, group.sha256) or part.index >= part.count:
            raise Poison(f"piece {part.index} of {part.group} does not match its group")
        group.pieces[part.index] = base64.b64decode(part.data)
        if len(group.pieces) < group.count:
            await self._await_rest(part, group)
            return
        del self._groups[part.group]
        try:
            await self.deliver(self._joined(part, group), delivery)
        except BaseException as exc:
            group.done.set_exception(Requeue(f"result of {part.record_id} not written: {exc}"))
            group.done.exception()  # retrieved: the waiters re-raise it
            raise
        group.done.set_result(None)

    async def _await_rest(self, part: ResultPart, group: _Group) -> None:
        """Hold this piece (unfinished) until the group is written, or give it back."""
        try:
            await asyncio.wait_for(asyncio.shield(group.done), self.wait)
        except TimeoutError:
            if self._groups.get(part.group) is group:
                group.pieces.pop(part.index, None)
            raise Requeue(f"pieces of {part.record_id} missing after {self.wait:g} s") from None

    @staticmethod
    def _joined(part: ResultPart, group: _Group) -> ResultMessage:
        body = b"".join(group.pieces[n] for n in range(group.count))
        if hashlib.sha256(body).hexdigest() != group.sha256:
            raise Poison(f"pieces of {part.record_id} do not add up to their sha256")
        return ResultMessage.model_validate_json(body)
