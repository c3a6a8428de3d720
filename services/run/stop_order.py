"""A run's staged shutdown: the stop order `common/service.host` runs once the run is
complete or was stopped, so nothing paid for is dropped.

1. ingest publishes no more;
2. callers take no more asks; the in-flight calls finish for the grace;
3. downloads stop (interrupted: at once; complete: after the grace);
4. interrupted: the results of the calls that just finished reach the ledger (the
   run's channels counted down on the bus, at most `drain_timeout` s);
5. the bus stops (`stop_bus`);
6. complete: the run's channels are deleted, nothing of the batch is left on them.

host then closes the parts (the sink last: its ledger is flushed) and the run writes
the output from the ledger.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus
from gpt4batch.common.service import StopStage, stop_bus

#: Longest wait, after a stop, for results already published to reach the ledger.
DRAIN_TIMEOUT = 10.0

log = glog.get_logger("gpt4batch.run")


class StoppableJob(Protocol):
    """What the stop order needs of the run's main job (`job.RunJob`)."""

    @property
    def interrupted(self) -> bool:
        """True unless the batch was complete when the job ended."""
        ...

    async def stop_ingest(self) -> None: ...


class RunStopOrder:
    """The stages, in order (`stages`); each reads `job.interrupted` when it runs."""

    def __init__(
        self,
        job: StoppableJob,
        *,
        channel: str,
        grace: float,
        downloads: bool,
        drain_timeout: float = DRAIN_TIMEOUT,
    ) -> None:
        self.job = job
        self.channel = channel
        self.grace = grace
        self.downloads = downloads
        self.drain_timeout = drain_timeout

    @property
    def stages(self) -> list[StopStage]:
        return [
            self.stop_ingest,
            self.stop_calls,
            self.stop_downloads,
            self.drain_results,
            stop_bus(self.grace),
            self.delete_channels,
        ]

    async def stop_ingest(self, bus: Bus) -> None:
        await self.job.stop_ingest()

    async def stop_calls(self, bus: Bus) -> None:
        await bus.stop_consuming(bus.topics.asks, self.grace)

    async def stop_downloads(self, bus: Bus) -> None:
        if self.downloads:
            grace = 0 if self.job.interrupted else self.grace
            await bus.stop_consuming(bus.topics.downloads, grace)

    async def drain_results(self, bus: Bus) -> None:
        """Interrupted: the results of the calls that just finished, into the ledger."""
        if self.job.interrupted:
            topics = [bus.topics.results, bus.topics.result_parts, bus.topics.downloaded]
            await until_drained(bus, topics, self.channel, self.drain_timeout)

    async def delete_channels(self, bus: Bus) -> None:
        """Complete: nothing of this batch is left on the run's channels. Deleted once the
        run's readers are gone: deleting a channel under a connected reader makes nsqd drop
        the connection (pynsq logs ERRORs and reconnects)."""
        if self.job.interrupted:
            return
        t = bus.topics
        owned = (t.results, t.result_parts, t.downloaded, t.dead, t.batches)
        await asyncio.gather(
            *(bus.delete_channel(topic, self.channel) for topic in owned),
            return_exceptions=True,
        )


async def until_drained(
    bus: Bus, topics: list[str], channel: str, timeout: float = DRAIN_TIMEOUT
) -> None:
    """Until the run's channel of each topic holds nothing (queued, deferred, in flight)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            backlog = sum([await bus.backlog(topic, channel) for topic in topics])
        except Exception as exc:  # nsqd gone: what it holds stays for the next run
            log.warning("cannot read the run's backlog", error=str(exc))
            return
        if backlog == 0:
            return
        await asyncio.sleep(0.05)
