"""`gpt4batch dead list|replay` on real nsqd: listing consumes nothing, replay republishes
the original body to the topic it died on and drops only what it replayed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from gpt4batch.common.messages import DeadLetter
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.common.topics import Channels
from tests.support.nsq_servers import Nsqd


def dead(nsqd: Nsqd, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "dead", *args,
         "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", prefix, "--quiet", "1.5"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )  # fmt: skip


def letter(n: int, topic: str, *, truncated: bool = False) -> DeadLetter:
    return DeadLetter(
        topic=topic,
        channel="caller",
        service="caller",
        id=f"id{n}",
        attempts=10,
        reason=f"gave up {n}",
        at=time.time(),
        body=f'{{"n":{n}}}',
        body_truncated=truncated,
    )


def test_list_keeps_every_letter_and_replay_republishes(nsqd: Nsqd, topic_prefix: str) -> None:
    settings = BaseServiceSettings(nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix)
    asks = settings.topics.asks

    async def publish() -> None:
        bus = NsqBus(settings, service="t")  # creates the standard channels, `keep` included
        await bus.start()
        await bus.publish_many(
            bus.topics.dead,
            [letter(1, asks), letter(2, asks), letter(3, asks, truncated=True)],
        )
        await bus.stop(1)

    asyncio.run(publish())
    keep = (settings.topics.dead, Channels.DEAD_KEEP)
    assert nsqd.depth(*keep) == 3
    for _ in range(2):  # listing twice shows the same letters: nothing was consumed
        r = dead(nsqd, topic_prefix, "list")
        assert r.returncode == 0, r.stderr
        lines = r.stdout.splitlines()
        assert sorted(line.split()[0] for line in lines) == ["id1", "id2", "id3"]
        assert "truncated: cannot replay" in next(x for x in lines if x.startswith("id3"))
        assert "gave up 1" in r.stdout and "listed 3 dead letter(s)" in r.stderr
        assert nsqd.depth(*keep) == 3

    r = dead(nsqd, topic_prefix, "replay")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count("replayed ") == 2 and "kept     id3" in r.stdout
    assert nsqd.depth(asks, Channels.CALLER) == 2  # the original bodies, back on their topic
    assert nsqd.depth(*keep) == 1  # only the letter that could not be replayed stays
    listed = dead(nsqd, topic_prefix, "list", "--json")
    assert [DeadLetter.model_validate_json(x).id for x in listed.stdout.splitlines()] == ["id3"]


def test_dead_without_an_address_is_one_line_exit_2() -> None:
    r = subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", "dead", "list"],
        capture_output=True, text=True, timeout=60,
        env={**os.environ, "GPT4BATCH_NSQD_TCP_ADDRESS": "", "GPT4BATCH_LOOKUPD_HTTP_ADDRESS": ""},
    )  # fmt: skip
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
