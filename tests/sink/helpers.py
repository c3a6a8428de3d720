"""Shared builders for the sink tests."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import (
    REJECT_CODE,
    BatchManifest,
    DownloadResult,
    Record,
    Reject,
    ResultMessage,
    reject_message,
)
from gpt4batch.common.topics import Topics
from gpt4batch.services.sink.appender import Fsync
from gpt4batch.services.sink.sink import Sink


def run(coro: Awaitable[Any], timeout: float = 30) -> Any:
    return asyncio.run(asyncio.wait_for(coro, timeout))


class FakeDelivery:
    id = "0000000000000001"
    attempts = 1
    body = b""

    def touch(self) -> None:
        pass


DELIVERY = FakeDelivery()


def result(
    rid: str,
    batch: str = "b1",
    seq: int = 0,
    reject_line: int | None = None,
    *,
    failed: bool = False,
    files: list[str] | None = None,
) -> ResultMessage:
    fields: dict[str, Any] = {"id": rid, "asks": [{"id": "a1", "content": "hi"}], "answers": None}
    fields["iErr"] = {"code": 500, "message": "upstream failed"} if failed else None
    reject = None
    if reject_line is not None:
        reject = Reject(line=reject_line, id=rid, reason="duplicate id")
        message = reject_message(reject_line, None, "duplicate id")
        fields["iErr"] = {"code": REJECT_CODE, "message": message}
    if files:
        spec = [{"origin": f"http://x/{f}", "local": f} for f in files]
        fields["answers"] = [{"downloads": [s["origin"] for s in spec], "spec_downloads": spec}]
    record = Record.model_validate(fields)
    return ResultMessage(
        batch=batch, seq=seq, record=record, reject=reject, planned_downloads=files or []
    )


def download(local: str, *, ok: bool = True, batch: str = "b1") -> DownloadResult:
    return DownloadResult(
        batch=batch,
        record_id="r",
        ask_id="a1",
        url=f"http://x/{local}",
        local=local,
        ok=ok,
        size=1 if ok else None,
        error=None if ok else "404",
    )


def manifest(total: int, batch: str = "b1") -> BatchManifest:
    return BatchManifest(batch=batch, total=total, input="in.jsonl")


def make_sink(
    out: Path | None = None,
    *,
    out_dir: Path | None = None,
    fsync: Fsync = os.fsync,
    every: int = 500,
    interval: float = 0.01,
) -> tuple[Sink, MemoryBus]:
    """A sink bound to a recording MemoryBus (call inside the running loop)."""
    sink = Sink(out=out, out_dir=out_dir, every=every, interval=interval, fsync=fsync)
    bus = MemoryBus(service="sink", topics=Topics("t"), record=True)
    sink.bus = bus
    return sink, bus


def journal(out: Path) -> Path:
    return out.with_name(out.stem + ".journal.jsonl")


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def completions(bus: MemoryBus) -> list[BatchManifest]:
    bodies = bus.published.get(bus.topics.batches, [])
    return [BatchManifest.model_validate_json(b) for b in bodies]
