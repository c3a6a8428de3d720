"""The caller's own CPU per record, without NSQ: `CallerService` on an in-process bus.

    .venv/bin/python bench/caller_cpu.py --records 10000
    .venv/bin/py-spy record --format raw -o /tmp/c.txt -- .venv/bin/python bench/caller_cpu.py

One-ask records against the simulator's fast path (another process, instant
answers); what the caller publishes is counted and dropped, so the figure is the
handler chain, the HTTP call and the bus's dispatch, not nsqd's socket traffic
(the pipeline row of bench/table.py measures that). Run it for two trees side by side
(`--python OTHER/.venv/bin/python` is not needed: run it with each tree's own venv).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

from pydantic import SecretStr

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gpt4batch.common import logging as glog
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.service import run_process
from gpt4batch.common.topics import Topics
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings
from tests.support.mock_upstream import MockUpstream


class DroppingBus(MemoryBus):
    """Delivers asks; counts and drops everything else published."""

    def __init__(self, **kwargs: object) -> None:
        super().__init__(**kwargs)  # type: ignore[arg-type]
        self.dropped: dict[str, int] = {}
        self.results = 0
        self.all_done = asyncio.Event()
        self.expected = 0

    async def _publish(self, topic: str, bodies: list[bytes]) -> None:
        if topic == self.topics.asks:
            await super()._publish(topic, bodies)
            return
        self.dropped[topic] = self.dropped.get(topic, 0) + len(bodies)
        if topic == self.topics.results:
            self.results += len(bodies)
            if self.results >= self.expected:
                self.all_done.set()


def ask_bodies(records: int) -> list[bytes]:
    return [
        json.dumps(
            {"v": 1, "batch": "bench", "seq": i,
             "record": {"id": f"r{i}", "asks": [{"id": "a0", "content": f"q{i}"}]}}
        ).encode()
        for i in range(records)
    ]  # fmt: skip


async def measure(
    url: str, token: str, records: int, concurrency: int, feed: bool, tpm: int = 0
) -> float:
    limits = {"tpm": tpm} if tpm else {}  # a tree without --tpm runs the row with 0 only
    settings = CallerSettings(
        base_url=url, access_token=SecretStr(token), qps=0, concurrency=concurrency,
        enable_download=False, feed=feed, **limits,
    )  # fmt: skip
    bus = DroppingBus(topics=Topics("bench"), channel_capacity=records + 1)
    bus.expected = records
    service = CallerService(settings)
    await service.start()
    service.register(bus)
    await bus.start()
    bodies = ask_bodies(records)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await bus.publish_many(bus.topics.asks, bodies)
    await bus.all_done.wait()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    await bus.stop(grace=5)
    await service.close()
    print(
        f"records={records} wall={wall:.2f}s rec/s={records / wall:,.0f} "
        f"cpu_ms_per_record={1000 * cpu / records:.3f} dropped={bus.dropped}",
        flush=True,
    )
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--no-feed", action="store_true", help="caller --feed false")
    parser.add_argument(
        "--tpm", type=int, default=0, help="caller --tpm (a limit that never binds: its cost)"
    )
    args = parser.parse_args()
    glog.configure("json", "info")  # as a service runs: debug lines filtered
    with MockUpstream("--fast") as mock:

        async def go() -> int:
            await measure(
                mock.url, mock.token, args.records, args.concurrency, not args.no_feed, args.tpm
            )
            return 0

        return run_process(go)


if __name__ == "__main__":
    raise SystemExit(main())
