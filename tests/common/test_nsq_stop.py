"""NsqBus's stop writes the last handlers' FIN/REQ frames out before closing (no fixed sleep)."""

from __future__ import annotations

import asyncio
from typing import Any

from gpt4batch.common.nsq import patches


class FakeStream:
    def __init__(self, busy_polls: int) -> None:
        self.busy_polls = busy_polls

    def closed(self) -> bool:
        return False

    def writing(self) -> bool:
        self.busy_polls -= 1
        return self.busy_polls >= 0


class FakeConn:
    def __init__(self, busy_polls: int) -> None:
        self.stream = FakeStream(busy_polls)
        self.flushed = 0

    def flush_frames(self) -> None:
        self.flushed += 1


class FakeClient:
    def __init__(self, *conns: Any) -> None:
        self.conns = {str(i): c for i, c in enumerate(conns)}


def test_queued_frames_are_flushed_and_written_before_the_close() -> None:
    quick, slow = FakeConn(0), FakeConn(5)
    asyncio.run(patches.frames_written([FakeClient(quick), FakeClient(slow)]))
    assert quick.flushed == slow.flushed == 1  # nothing waits for the 2-ms coalescing timer
    assert slow.stream.busy_polls < 0  # waited until its stream had written everything


def test_a_stuck_stream_does_not_hold_the_stop_forever() -> None:
    stuck = FakeConn(10**9)
    asyncio.run(patches.frames_written([FakeClient(stuck)], timeout=0.01))
    assert stuck.flushed == 1
