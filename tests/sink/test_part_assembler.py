"""`PartAssembler` against orphan pieces: bounded holding, bounded requeues (issue 18)."""

from __future__ import annotations

import asyncio
import base64
import hashlib

import pytest

from gpt4batch.common.errors import Poison, Requeue
from gpt4batch.common.messages import ResultMessage, ResultPart
from gpt4batch.common.result_parts import MAX_PARTS, PartAssembler, held_limit, split_result
from tests.sink.helpers import DELIVERY, result, run


def orphan(n: int, count: int = 2) -> ResultPart:
    """Piece 0 of a result whose other pieces never come."""
    data = base64.b64encode(b"{}").decode()
    sha = hashlib.sha256(f"orphan{n}".encode()).hexdigest()
    return ResultPart(
        batch="junk", seq=n, record_id=f"o{n}", group=f"g{n}", index=0, count=count,
        sha256=sha, data=data,
    )  # fmt: skip


def real_pieces(rid: str = "big") -> list[ResultPart]:
    msg = result(rid, seq=0)
    msg.record.asks[0].content = "x" * 2000
    body = msg.model_dump_json().encode()
    pieces = split_result(msg, body, limit=1024 + 4 * len(rid) + 1000)
    assert 3 <= len(pieces) <= 4
    return pieces


def test_orphans_are_given_back_bounded_and_never_block_a_real_result() -> None:
    async def scenario() -> None:
        written: list[ResultMessage] = []

        async def deliver(msg: ResultMessage, _: object) -> None:
            written.append(msg)

        parts = PartAssembler(deliver, wait=60, max_held=4)
        orphans = [asyncio.ensure_future(parts.handle(orphan(n), DELIVERY)) for n in range(10)]
        await asyncio.sleep(0.05)
        # Only the four most recent orphans are still held; the others were given back
        given_back = [t for t in orphans if t.done()]
        assert len(given_back) == 6
        for task in given_back:
            exc = task.exception()
            assert isinstance(exc, Requeue) and exc.bounded
        # A real result's pieces still arrive, make room and are written
        await asyncio.gather(*(parts.handle(p, DELIVERY) for p in real_pieces()))
        assert [m.record.id for m in written] == ["big"]
        await asyncio.sleep(0)
        held = [t for t in orphans if not t.done()]
        assert len(held) < 4  # the real pieces took the room of older orphans
        for task in held:
            task.cancel()
        await asyncio.gather(*orphans, return_exceptions=True)

    run(scenario())


def test_a_piece_waits_at_most_wait_and_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        async def deliver(msg: ResultMessage, _: object) -> None:
            raise AssertionError("nothing is whole")

        parts = PartAssembler(deliver, wait=0.05)
        with pytest.raises(Requeue) as caught:
            await parts.handle(orphan(1), DELIVERY)
        assert caught.value.bounded and "missing after" in caught.value.reason
        assert parts._groups == {}  # an orphan's group is not kept forever

    run(scenario())


def test_pieces_that_cannot_belong_to_any_result_are_poison() -> None:
    async def scenario() -> None:
        async def deliver(msg: ResultMessage, _: object) -> None:
            raise AssertionError("never")

        parts = PartAssembler(deliver)
        bad = orphan(1).model_copy(update={"index": 2})
        with pytest.raises(Poison):
            await parts.handle(bad, DELIVERY)
        with pytest.raises(Poison):
            await parts.handle(orphan(2, count=MAX_PARTS + 1), DELIVERY)
        assert parts._groups == {}

    run(scenario())


def test_held_limit_leaves_room_in_the_window() -> None:
    assert held_limit(200) == 50 and held_limit(1000) == MAX_PARTS and held_limit(2) == 1
