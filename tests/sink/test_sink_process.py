"""`python -m gpt4batch.services.sink` as a real process against a real nsqd."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import BatchManifest
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from tests.sink.helpers import manifest, result, run
from tests.support.nsq_servers import Nsqd, wait_channel


def wait_for(predicate, timeout: float = 30.0, proc: subprocess.Popen[bytes] | None = None) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"process exited early with {proc.returncode}")
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.05)


def test_sink_process_writes_each_record_once_and_marks_done(
    nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    out = tmp_path / "out.jsonl"
    log = (tmp_path / "sink.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gpt4batch.services.sink",
            "--nsqd-tcp-address",
            nsqd.tcp_address,
            "--topic-prefix",
            topic_prefix,
            "-o",
            str(out),
            "--log-format",
            "json",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        completes: list[BatchManifest] = []

        async def scenario() -> None:
            settings = BaseServiceSettings(
                nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
            )
            bus = NsqBus(settings, service="test")

            async def on_batch(msg: BatchManifest, delivery: Delivery) -> None:
                if msg.status == "complete":
                    completes.append(msg)

            bus.subscribe(bus.topics.batches, "test", BatchManifest, on_batch)
            await bus.start()
            # Given every channel exists (nsqd copies a message only to existing channels)
            for topic, channel in [
                (bus.topics.batches, "test"),
                (bus.topics.batches, "sink"),
                (bus.topics.results, "sink"),
            ]:
                await wait_channel(nsqd, topic, channel)
            msgs = [result(f"r{i}", seq=i) for i in range(20)]
            await bus.publish_many(bus.topics.results, [*msgs, msgs[3], msgs[7]])
            await bus.publish(bus.topics.batches, manifest(20))
            deadline = time.monotonic() + 30
            while not completes:
                assert time.monotonic() < deadline, "no complete manifest"
                await asyncio.sleep(0.05)
            await bus.stop(grace=1)

        run(scenario(), timeout=60)
        wait_for(lambda: (tmp_path / "out.done").exists(), proc=proc)
        lines = out.read_text().splitlines()
        assert sorted(json.loads(x)["id"] for x in lines) == sorted(f"r{i}" for i in range(20))
        assert json.loads((tmp_path / "out.done").read_text())["written"] == 20
        assert completes[0].batch == "b1" and completes[0].total == 20
        # When SIGTERM arrives, the sink drains and exits 0
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
