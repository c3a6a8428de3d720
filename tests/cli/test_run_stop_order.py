"""`gpt4batch run`'s staged shutdown (services/run/stop_order.py) on the in-memory bus:
the stages run in order, and what they do depends on how the run ended."""

from __future__ import annotations

import asyncio

import pytest

from gpt4batch.common.bus import Bus
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.service import App, host
from gpt4batch.services.run.stop_order import RunStopOrder


class NotedBus(MemoryBus):
    """Notes the calls a stop order makes; `held` results wait on the run's channel
    until the second look at the backlog."""

    def __init__(self, held: int = 0) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.held = held

    async def stop_consuming(self, topic: str, grace: float = 30.0) -> None:
        self.calls.append(f"stop {topic.rsplit('.', 1)[-1]} grace={grace:g}")
        await super().stop_consuming(topic, grace)

    async def backlog(self, topic: str, channel: str) -> int:
        self.calls.append(f"backlog {topic.rsplit('.', 1)[-1]} {channel}")
        held, self.held = self.held, 0
        return held

    async def stop(self, grace: float = 30.0) -> None:
        self.calls.append(f"stop bus grace={grace:g}")
        await super().stop(grace)

    async def delete_channel(self, topic: str, channel: str) -> None:
        self.calls.append(f"delete {topic.rsplit('.', 1)[-1]} {channel}")


class Job:
    """A main job that ended complete or interrupted, noting when ingest is stopped."""

    def __init__(self, bus: NotedBus, interrupted: bool) -> None:
        self.bus = bus
        self.interrupted = interrupted

    async def __call__(self, bus: Bus, stop: asyncio.Event) -> int:
        return 0

    async def stop_ingest(self) -> None:
        self.bus.calls.append("stop ingest")


def stop_run(interrupted: bool, downloads: bool, held: int = 0) -> list[str]:
    bus = NotedBus(held)
    job = Job(bus, interrupted)
    order = RunStopOrder(job, channel="run-x", grace=7, downloads=downloads)
    app = App(main=job, stop_order=order.stages)
    assert asyncio.run(host(app, bus, asyncio.Event(), grace=7)) == 0
    return bus.calls


def test_a_complete_run_gives_calls_and_downloads_the_grace_then_deletes_its_channels() -> None:
    assert stop_run(interrupted=False, downloads=True) == [
        "stop ingest",
        "stop asks grace=7",
        "stop downloads grace=7",
        "stop bus grace=7",  # no drain: the ledger already holds the batch
        *[f"delete {t} run-x" for t in ("results", "parts", "downloaded", "dead", "batches")],
    ]


@pytest.mark.parametrize("held", [0, 3])
def test_a_stopped_run_drains_its_results_into_the_ledger_and_keeps_its_channels(
    held: int,
) -> None:
    """Interrupted: downloads stop at once, the results of the calls that just finished
    are awaited on the run's channel, and the channels stay for the next run."""
    drained = ["backlog results run-x", "backlog parts run-x", "backlog downloaded run-x"]
    assert stop_run(interrupted=True, downloads=True, held=held) == [
        "stop ingest",
        "stop asks grace=7",
        "stop downloads grace=0",
        *drained * (2 if held else 1),  # looked at again until nothing is held
        "stop bus grace=7",
    ]


def test_without_downloads_no_downloads_stage() -> None:
    calls = stop_run(interrupted=False, downloads=False)
    assert not [c for c in calls if "downloads" in c]
    assert calls[:2] == ["stop ingest", "stop asks grace=7"]
