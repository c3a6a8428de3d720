"""`SinkService`: the sink's handlers subscribed on a bus (NSQ or in-memory).

The one place that subscribes the sink's topics: the file sink on `sink`, the
gateway and `gpt4batch run` each on its own channel with its hooks (`owns` or
`only_batch`, `on_progress`, `on_record`) and its finisher (`on_complete`): what is written
once the sink decides a batch is complete (sink.py).
Results are written with group commit (one write + fsync per group), set by
`fsync_every` / `fsync_interval_ms`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gpt4batch.common.bus import Bus, Delivery
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
from gpt4batch.services.sink.sink import BatchHook, OnComplete, OnRecord, Sink


class SinkService:
    name = "sink"

    def __init__(
        self,
        settings: SinkSettings,
        *,
        channel: str = Channels.SINK,
        owns: Callable[[str], bool] | None = None,
        on_progress: BatchHook | None = None,
        on_complete: OnComplete | None = None,
        on_record: OnRecord | None = None,
        only_batch: str | None = None,
    ) -> None:
        self.settings = settings
        self.channel = channel
        self.sink = Sink(
            out=Path(settings.out) if settings.out else None,
            out_dir=Path(settings.out_dir) if settings.out_dir else None,
            every=settings.fsync_every,
            interval=settings.fsync_interval_ms / 1000,
            stream=settings.stream_output,
            limits=settings.limits(),
            owns=owns,
            on_progress=on_progress,
            on_complete=on_complete,
            on_record=on_record,
            only_batch=only_batch,
        )

    def register(self, bus: Bus) -> None:
        self.sink.bus = bus
        topics, mif, channel = bus.topics, self.settings.max_in_flight, self.channel
        bus.subscribe_batches(  # group commit: one write + fsync per group of results
            topics.results,
            channel,
            ResultMessage,
            self.sink.handle_results,
            max_in_flight=mif,
            every=self.settings.fsync_every,
            interval=self.settings.fsync_interval_ms / 1000,
        )
        bus.subscribe(
            topics.downloaded,
            channel,
            DownloadResult,
            self.sink.handle_download,
            max_in_flight=mif,
        )
        bus.subscribe(topics.batches, channel, BatchManifest, self.sink.handle_manifest)
        bus.subscribe(topics.dead, channel, DeadLetter, self.sink.handle_dead)
        # Results over one message's size arrive in pieces (common/result_parts.py).
        pieces = PartAssembler(
            self.sink.handle_result, wait=self.settings.part_wait_seconds, max_held=held_limit(mif)
        )

        async def handle_part(part: ResultPart, delivery: Delivery) -> None:
            if not self.sink.skips(part.batch, "part"):  # not held for a batch not ours
                await pieces.handle(part, delivery)

        bus.subscribe(topics.result_parts, channel, ResultPart, handle_part, max_in_flight=mif)

    async def start(self) -> None:
        await self.sink.start()

    async def close(self) -> None:
        await self.sink.close()
