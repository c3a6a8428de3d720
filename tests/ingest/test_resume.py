"""Re-running ingest for the same batch and input publishes only what it had not published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.services.ingest.checkpoint import PublishedSeqs, ranges
from gpt4batch.services.ingest.ingest import ingest
from gpt4batch.services.ingest.reader import read_lines


def lines(n: int) -> list[bytes]:
    return [
        json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": "q"}]}).encode()
        for i in range(n)
    ]


async def publish(tmp_path: Path, data: bytes, fail_after: int | None = None) -> MemoryBus:
    bus = MemoryBus(record=True)
    if fail_after is not None:
        real = bus._publish
        sent = {"n": 0}

        async def flaky(topic: str, bodies: list[bytes]) -> None:
            if topic == bus.topics.asks:
                sent["n"] += 1
                if sent["n"] > fail_after:
                    raise ConnectionError("killed")
            await real(topic, bodies)

        bus._publish = flaky  # type: ignore[method-assign]
    source = tmp_path / "in.jsonl"
    source.write_bytes(data)
    index = PublishedSeqs(tmp_path / "state", "b", "0" * 64)
    with source.open("rb") as stream:
        await ingest(
            read_lines(stream, 1 << 20),
            bus,
            batch="b",
            source=str(source),
            base_dir=tmp_path,
            publish_batch_size=100,
            max_outstanding=1,
            published=index,
        )
    return bus


def test_ranges() -> None:
    assert ranges([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 5), (9, 10)]


def test_a_rerun_after_a_failure_publishes_only_the_rest(tmp_path: Path) -> None:
    data = b"\n".join(lines(1000)) + b"\n"
    with pytest.raises(ConnectionError):
        asyncio.run(publish(tmp_path, data, fail_after=4))  # 4 chunks of 100 acknowledged
    bus = asyncio.run(publish(tmp_path, data))
    seqs = [json.loads(b)["seq"] for b in bus.published[bus.topics.asks]]
    assert seqs == list(range(400, 1000))
    # A third run publishes no ask at all, only the manifest again.
    bus = asyncio.run(publish(tmp_path, data))
    assert bus.published.get(bus.topics.asks) is None
    assert json.loads(bus.published[bus.topics.batches][0])["total"] == 1000
