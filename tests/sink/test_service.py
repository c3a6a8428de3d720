"""The sink service wired on a MemoryBus, and its settings."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import BatchManifest
from gpt4batch.common.settings import load
from gpt4batch.common.topics import Topics
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings
from tests.sink.helpers import ids, manifest, result, run


def test_service_on_memory_bus_writes_once_and_completes(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    settings = load(SinkSettings, out=str(out), fsync_interval_ms=5)

    async def scenario() -> list[BatchManifest]:
        bus = MemoryBus(service="sink", topics=Topics("t"), record=True)
        service = SinkService(settings)
        await service.start()
        service.register(bus)
        await bus.start()
        msgs = [result(f"r{i}", seq=i) for i in range(30)]
        await bus.publish_many(bus.topics.results, [*msgs, msgs[0], msgs[29]])
        await bus.publish(bus.topics.batches, manifest(30))
        for _ in range(200):
            if (tmp_path / "out.done").exists():
                break
            await asyncio.sleep(0.02)
        await bus.stop(grace=1)
        await service.close()
        bodies = bus.published[bus.topics.batches]
        return [BatchManifest.model_validate_json(b) for b in bodies]

    sent = run(scenario())
    assert sorted(ids(out)) == sorted(f"r{i}" for i in range(30))
    assert [m.status for m in sent] == ["published", "complete"]


@pytest.mark.parametrize("given", [{}, {"out": "a.jsonl", "out_dir": "d"}])
def test_settings_need_exactly_one_destination(given: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="--out"):
        load(SinkSettings, **given)
