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
import pytest

from gpt4batch.common.authenticator import Authenticator
from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import Ask, AskMessage, FeedMessage, Record, ResultMessage
from gpt4batch.common.nsq.bus import NsqBus
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


@pytest.mark.redteam
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


def test_run_n_signs_with_the_given_bus_secret_file(
    nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """`run -n` beside services of the same nsqd shares their secret; a bad file is a user's
    mistake (one line, exit 2) and the secret never shows in the output."""
    write_input(tmp_path, 1, asks=1)
    topic = f"feed{uuid.uuid4().hex[:10]}"
    bad = _run(tmp_path, nsqd, topic_prefix, topic, "--bus-secret-file", str(tmp_path / "none"))
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].endswith("No such file or directory")
    assert "Traceback" not in bad.stderr
    secret = tmp_path / "bus-secret"
    secret.write_text("s3cr3t-" + uuid.uuid4().hex)
    results = f"{topic_prefix}.results"
    params = {"topic": results, "channel": "spy"}  # keeps a copy of the run's results
    http = f"http://{nsqd.http_address}"
    httpx.post(f"{http}/topic/create", params={"topic": results}).raise_for_status()
    httpx.post(f"{http}/channel/create", params=params).raise_for_status()
    good = _run(tmp_path, nsqd, topic_prefix, topic, "--bus-secret-file", str(secret))
    assert good.returncode == 0, good.stderr[-1500:]
    assert secret.read_text() not in good.stdout + good.stderr

    got: list[ResultMessage] = []

    async def read() -> None:  # verified with the file's secret, or refused (not handed over)
        settings = BaseServiceSettings(nsqd_tcp_address=[nsqd.tcp_address])
        bus = NsqBus(settings, service="t", authenticator=Authenticator(secret.read_bytes()))

        async def take(msg: ResultMessage, delivery: Delivery) -> None:
            got.append(msg)

        bus.subscribe(results, "spy", ResultMessage, take)
        await bus.start()
        for _ in range(200):
            if got:
                break
            await asyncio.sleep(0.05)
        await bus.stop(1)

    asyncio.run(read())
    assert len(got) == 1 and got[0].record.answers
