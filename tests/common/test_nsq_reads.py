"""`coalesce_reads`: every frame nsqd sent, in order, however the bytes arrive in reads."""

from __future__ import annotations

import asyncio
import itertools
import struct
from typing import Any

from nsq import event as nsq_event

from gpt4batch.common.nsq.patches import coalesce_reads


def frame(body: bytes) -> bytes:
    return struct.pack(">l", len(body)) + body


class FakeStream:
    """Hands out the queued chunks, one per `read_bytes`, like a socket's reads."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.reads = 0

    def read_bytes(self, size: int, partial: bool = False) -> asyncio.Future[bytes]:
        assert partial
        self.reads += 1
        read: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        if self.chunks:
            read.set_result(self.chunks.pop(0)[:size])
        else:
            read.set_exception(OSError("Stream is closed"))
        return read


class FakeConn:
    tls_v1 = snappy = deflate = False

    def __init__(self, stream: FakeStream) -> None:
        self.stream = stream
        self.frames: list[bytes] = []
        self.errors: list[Any] = []
        self.closed = False

    def trigger(self, name: str, **kwargs: Any) -> None:
        if name == nsq_event.DATA:
            self.frames.append(kwargs["data"])
        elif name == nsq_event.ERROR:
            self.errors.append(kwargs["error"])

    def close(self) -> None:
        self.closed = True


def test_frames_split_and_joined_across_reads_arrive_whole_and_in_order() -> None:
    bodies = [b"\x00\x00\x00\x02" + b"m" * n for n in (0, 1, 7, 300, 5)] + [b"_heartbeat_"]
    wire = b"".join(frame(b) for b in bodies)
    cuts = [0, 1, 3, 4, 9, 10, 200, 201, 250, len(wire) - 2, len(wire)]
    chunks = [wire[a:b] for a, b in itertools.pairwise(cuts)]
    reads = len(chunks) + 1  # the last read finds the stream closed

    async def scenario() -> FakeConn:
        conn = FakeConn(FakeStream(chunks))
        coalesce_reads(conn)
        conn._start_read()  # type: ignore[attr-defined]
        for _ in range(100):
            await asyncio.sleep(0)
        return conn

    conn = asyncio.run(scenario())
    assert conn.frames == bodies
    assert conn.stream.reads == reads
    assert conn.closed and len(conn.errors) == 1  # closed: reported as pynsq reports it


def test_tls_connections_keep_pynsq_reads() -> None:
    conn = FakeConn(FakeStream([]))
    conn.tls_v1 = True
    coalesce_reads(conn)
    assert "_start_read" not in vars(conn)
