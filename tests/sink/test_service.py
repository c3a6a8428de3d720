"""The sink service wired on a MemoryBus, and its settings."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import BatchManifest
from gpt4batch.common.settings import load
from gpt4batch.common.topics import Topics
from gpt4batch.services.sink.service import SinkService
from gpt4batch.services.sink.settings import SinkSettings, embedded_settings
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


def test_an_embedded_sink_takes_its_values_not_the_file_sinks_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`run` and the gateway embed a sink: GPT4BATCH_OUT and the like are the file sink's
    (with GPT4BATCH_OUT read, the gateway's sink would have two destinations)."""
    monkeypatch.setenv("GPT4BATCH_OUT", str(tmp_path / "file-sink.jsonl"))
    monkeypatch.setenv("GPT4BATCH_FSYNC_EVERY", "3")
    settings = embedded_settings(out_dir=tmp_path / "ledger", max_in_flight=50)
    assert isinstance(settings, SinkSettings)
    assert (settings.out, settings.out_dir) == (None, str(tmp_path / "ledger"))
    assert (settings.fsync_every, settings.max_in_flight, settings.stream_output) == (
        500,
        50,
        False,
    )
    run_sink = embedded_settings(out=tmp_path / "out.jsonl", max_manifestless_age=math.inf)
    assert run_sink.max_manifestless_age == math.inf


@pytest.mark.parametrize(
    "given",
    [{}, {"max_in_flight": 0}, {"max_manifestless_age": 0.0}],
)
def test_an_embedded_sinks_settings_are_validated(tmp_path: Path, given: dict[str, Any]) -> None:
    """Built as the file sink's are, not assembled unchecked (`model_construct`)."""
    out = {} if not given else {"out": tmp_path / "out.jsonl"}
    with pytest.raises(ValidationError):
        embedded_settings(**out, **given)
