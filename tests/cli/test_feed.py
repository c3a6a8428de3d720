"""The original's NSQ feed: with -n every answered ask goes to `gpt4api` as
{"ask", "answer", "dir"} (checked against schemas/FeedMessage.json); --feed=false stops it."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import jsonschema

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import Ask, AskMessage, FeedMessage, Record
from gpt4batch.common.nsq_bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from tests.cli.test_run import run_cmd, upstream, write_input
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, wait_channel
from tests.support.pipeline import ServiceProcs, wait_for

SCHEMA = Path(__file__).resolve().parents[2] / "schemas" / "FeedMessage.json"


def _run(tmp_path: Path, nsqd: Nsqd, prefix: str, topic: str, *extra: str) -> Any:
    with MockUpstream("--seed", "9") as mock:
        return run_cmd(
            tmp_path,
            *["-i", "in.jsonl", "-n", "--nsqd-tcp-address", nsqd.tcp_address],
            *["--topic-prefix", prefix, "--feed-topic", topic, *upstream(mock), *extra],
        )


def _feed_count(nsqd: Nsqd, topic: str) -> int:
    for t in nsqd.stats(topic).get("topics") or []:
        if t["topic_name"] == topic:
            return int(t["message_count"])
    return 0


def test_every_answered_ask_is_fed_to_the_feed_topic(
    nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    write_input(tmp_path, 3, asks=2)
    topic = f"feed{uuid.uuid4().hex[:10]}"
    result = _run(tmp_path, nsqd, topic_prefix, topic)
    assert result.returncode == 0, result.stderr[-1500:]
    assert _feed_count(nsqd, topic) == 6

    settings = BaseServiceSettings(nsqd_tcp_address=[nsqd.tcp_address])
    got: list[FeedMessage] = []

    async def read() -> None:
        bus = NsqBus(settings, service="t")

        async def take(msg: FeedMessage, delivery: Delivery) -> None:
            got.append(msg)

        bus.subscribe(topic, "reader", FeedMessage, take)
        await bus.start()
        await wait_channel(nsqd, topic, "reader")
        for _ in range(200):
            if len(got) >= 6:
                break
            await asyncio.sleep(0.05)
        await bus.stop(1)

    asyncio.run(read())
    schema = json.loads(SCHEMA.read_text())
    asks = sorted(m.ask for m in got)
    assert asks == sorted(f"record {i} ask {k}" for i in range(3) for k in range(2))
    for msg in got:
        jsonschema.validate(msg.model_dump(mode="json"), schema)
        assert msg.dir == str(tmp_path.resolve()) and msg.answer.get("message_id")


def test_feed_false_publishes_nothing(nsqd: Nsqd, topic_prefix: str, tmp_path: Path) -> None:
    write_input(tmp_path, 2, asks=1)
    topic = f"feed{uuid.uuid4().hex[:10]}"
    result = _run(tmp_path, nsqd, topic_prefix, topic, "--feed=false")
    assert result.returncode == 0, result.stderr[-1500:]
    assert _feed_count(nsqd, topic) == 0


def test_the_caller_service_feeds_nothing_unless_told(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str
) -> None:
    """A caller service nobody configured a feed for must not fill nsqd's disk with every
    answer on a topic nobody reads (`run -n` keeps the original's feed, above)."""
    topic = f"feed{uuid.uuid4().hex[:10]}"
    results = f"{topic_prefix}.results"
    asks = [
        AskMessage(batch="b", seq=i, record=Record(id=f"r{i}", asks=[Ask(id="a", content="hi")]))
        for i in range(3)
    ]
    with MockUpstream("--seed", "9") as mock:
        procs.start(
            "caller", "caller", "--feed-topic", topic, *upstream(mock),
            "--upstream", "gpt4api", "--retries", "0",
        )  # fmt: skip
        body = b"\n".join(a.model_dump_json().encode() for a in asks)
        http = f"http://{nsqd.http_address}"
        reply = httpx.post(f"{http}/mpub", params={"topic": f"{topic_prefix}.asks"}, content=body)
        assert reply.status_code == 200, reply.text
        wait_for(lambda: _feed_count(nsqd, results) >= 3, 60, "3 results", procs.assert_alive)
    assert _feed_count(nsqd, topic) == 0
