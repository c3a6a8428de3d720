"""`SinkService`: the sink's handlers subscribed on a bus (NSQ or in-memory)."""

from __future__ import annotations

from pathlib import Path

from gpt4batch.common.bus import Bus
from gpt4batch.common.messages import (
    BatchManifest,
    DeadLetter,
    DownloadResult,
    ResultMessage,
    ResultPart,
)
from gpt4batch.common.result_parts import PartAssembler, held_limit
from gpt4batch.common.topics import Channels
from gpt4batch.services.sink.settings import SinkSettings
from gpt4batch.services.sink.sink import Sink


class SinkService:
    name = "sink"

    def __init__(self, settings: SinkSettings, sink: Sink | None = None) -> None:
        self.settings = settings
        self.sink = sink or Sink(
            out=Path(settings.out) if settings.out else None,
            out_dir=Path(settings.out_dir) if settings.out_dir else None,
            every=settings.fsync_every,
            interval=settings.fsync_interval_ms / 1000,
            stream=settings.stream_output,
            limits=settings.limits(),
        )

    def register(self, bus: Bus) -> None:
        self.sink.bus = bus
        topics, mif = bus.topics, self.settings.max_in_flight
        bus.subscribe_batches(  # group commit: one write + fsync per group of results
            topics.results,
            Channels.SINK,
            ResultMessage,
            self.sink.handle_results,
            max_in_flight=mif,
            every=self.settings.fsync_every,
            interval=self.settings.fsync_interval_ms / 1000,
        )
        bus.subscribe(
            topics.downloaded,
            Channels.SINK_DOWNLOADS,
            DownloadResult,
            self.sink.handle_download,
            max_in_flight=mif,
        )
        bus.subscribe(topics.batches, Channels.SINK, BatchManifest, self.sink.handle_manifest)
        bus.subscribe(topics.dead, Channels.SINK, DeadLetter, self.sink.handle_dead)
        # Results over one message's size arrive in pieces (common/result_parts.py).
        pieces = PartAssembler(
            self.sink.handle_result, wait=self.settings.part_wait_seconds, max_held=held_limit(mif)
        )
        bus.subscribe(
            topics.result_parts, Channels.SINK, ResultPart, pieces.handle, max_in_flight=mif
        )

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()
