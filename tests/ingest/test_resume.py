"""Re-running ingest for the same batch and input publishes only what it had not published."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage
from gpt4batch.common.topics import check_name
from gpt4batch.services.ingest.checkpoint import PublishedSeqs, ranges
from gpt4batch.services.ingest.ingest import ingest
from gpt4batch.services.ingest.reader import read_lines
from gpt4batch.services.ingest.resume import trace_channel


def lines(n: int) -> list[bytes]:
    return [
        json.dumps({"id": f"r{i}", "asks": [{"id": "a", "content": "q"}]}).encode()
        for i in range(n)
    ]


async def publish(
    tmp_path: Path,
    data: bytes,
    bus: MemoryBus,
    fail_after: int | None = None,
    resume: bool = True,
    index: PublishedSeqs | None = None,
) -> MemoryBus:
    """One ingest run of `data` as batch "b" on `bus` (the cluster: one bus is one nsqd,
    a new bus a new nsqd); `bus.published` then holds what this run published."""
    bus.published.clear()
    real = bus._publish
    if fail_after is not None:
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
    index = index or PublishedSeqs(tmp_path / "state", "b", "0" * 64)
    try:
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
                resume=resume,
            )
    finally:
        bus._publish = real  # type: ignore[method-assign]
    return bus


def asks_seqs(bus: MemoryBus) -> list[int]:
    return [json.loads(b)["seq"] for b in bus.published.get(bus.topics.asks, [])]


def test_ranges() -> None:
    assert ranges([5, 1, 2, 3, 9, 10]) == [(1, 3), (5, 5), (9, 10)]


def test_a_rerun_after_a_failure_publishes_only_the_rest(tmp_path: Path) -> None:
    data = b"\n".join(lines(1000)) + b"\n"
    nsqd = MemoryBus(record=True)
    with pytest.raises(ConnectionError):
        asyncio.run(publish(tmp_path, data, nsqd, fail_after=4))  # 4 chunks of 100 acknowledged
    bus = asyncio.run(publish(tmp_path, data, nsqd))
    assert asks_seqs(bus) == list(range(400, 1000))
    # A third run publishes no ask at all, only the manifest again.
    bus = asyncio.run(publish(tmp_path, data, nsqd))
    assert bus.published.get(bus.topics.asks) is None
    assert json.loads(bus.published[bus.topics.batches][0])["total"] == 1000


def test_a_rerun_marks_the_asks_the_killed_run_sent_unacknowledged(tmp_path: Path) -> None:
    """The index is written ahead of each chunk: a re-run knows which asks nsqd may hold
    already (sent, never acknowledged) and marks exactly those `republished`."""
    data = b"\n".join(lines(1000)) + b"\n"
    nsqd = MemoryBus(record=True)
    with pytest.raises(ConnectionError):
        asyncio.run(publish(tmp_path, data, nsqd, fail_after=4))  # the 5th chunk: no ack
    index = PublishedSeqs(tmp_path / "state", "b", "0" * 64)
    assert b"?400-499\n" in index.path.read_bytes()
    bus = asyncio.run(publish(tmp_path, data, nsqd))
    marked = [json.loads(b).get("republished", False) for b in bus.published[bus.topics.asks]]
    assert asks_seqs(bus) == list(range(400, 1000))
    assert marked == [True] * 100 + [False] * 500
    # Valid AskMessages, as the callers read them.
    assert AskMessage.model_validate_json(bus.published[bus.topics.asks][0]).republished


def test_a_rerun_into_a_new_nsqd_publishes_every_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Given a batch fully published to one nsqd, when the same file and batch id are
    ingested into a new (or wiped) nsqd, which has no trace of the batch, every record is
    published."""
    data = b"\n".join(lines(300)) + b"\n"
    asyncio.run(publish(tmp_path, data, MemoryBus(record=True)))
    bus = asyncio.run(publish(tmp_path, data, MemoryBus(record=True)))
    assert asks_seqs(bus) == list(range(300))
    # ... and the index now belongs to the new nsqd: a re-run there publishes nothing.
    again = asyncio.run(publish(tmp_path, data, bus))
    assert asks_seqs(again) == []


def test_the_index_names_its_nsqd_and_the_batch_trace_exists_before_any_ask(
    tmp_path: Path,
) -> None:
    """The trace is on nsqd before the first ask is published, and the index records it."""
    nsqd = MemoryBus(record=True)
    trace = (nsqd.topics.ingested, trace_channel("b"))
    seen_before_first_ask: list[bool] = []
    real = nsqd._publish

    async def watch(topic: str, bodies: list[bytes]) -> None:
        if topic == nsqd.topics.asks and not seen_before_first_ask:
            seen_before_first_ask.append(trace[1] in nsqd._topic_state(trace[0]).channels)
        await real(topic, bodies)

    nsqd._publish = watch  # type: ignore[method-assign]
    index = PublishedSeqs(tmp_path / "state", "b", "0" * 64)
    asyncio.run(publish(tmp_path, b"\n".join(lines(10)) + b"\n", nsqd, index=index))
    assert seen_before_first_ask == [True]
    assert index.path.read_bytes().splitlines()[0] == (
        b'# cluster {"nsqd": ["memory"], "trace": "gpt4batch.ingested/'
        + trace[1].encode()
        + b'", "traced": true}'
    )


def test_an_index_that_cannot_be_checked_is_a_usage_error_naming_resume_false(
    tmp_path: Path,
) -> None:
    """An index without its cluster line (written before it existed), on an nsqd without a
    trace of the batch: ingest cannot tell whether nsqd has the asks, and says so."""
    index = PublishedSeqs(tmp_path / "state", "b", "0" * 64)
    index.path.parent.mkdir(parents=True)
    index.path.write_bytes(b"0-99\n")
    data = b"\n".join(lines(100)) + b"\n"
    with pytest.raises(ConfigError, match="--resume false"):
        asyncio.run(publish(tmp_path, data, MemoryBus(record=True)))
    bus = asyncio.run(publish(tmp_path, data, MemoryBus(record=True), resume=False))
    assert asks_seqs(bus) == list(range(100))


def test_trace_channel_is_a_valid_nsq_channel_name() -> None:
    for batch in ["b", "x" * 200, "batch with spaces/and#hash", "émoji-✓"]:
        assert check_name(trace_channel(batch), "channel")
    assert trace_channel("a b") != trace_channel("a_b")
