"""`ingest()` on a MemoryBus: exactly which message lands on which topic."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from gpt4batch.common.errors import PublishError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import AskMessage, BatchManifest, ResultMessage
from gpt4batch.services.ingest.ingest import IngestSummary, ingest
from gpt4batch.services.ingest.reader import open_input, read_lines
from gpt4batch.services.ingest.validate import MIB

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def jl(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False)


def ask(n: int, **paths: Any) -> dict[str, Any]:
    return {"id": f"p{n}", "content": f"question {n}", **paths}


def run_ingest(path: Path, bus: MemoryBus, **kw: Any) -> IngestSummary:
    async def go() -> IngestSummary:
        with open_input(str(path)) as src:
            return await ingest(
                read_lines(src.stream, kw.pop("max_line_bytes", 10 * MIB)),
                bus,
                batch=kw.pop("batch", "b1"),
                source=src.name,
                base_dir=src.base_dir,
                input_path=str(src.path),
                **kw,
            )

    return asyncio.run(asyncio.wait_for(go(), 60))


def messages(bus: MemoryBus, topic: str, model: type[Any]) -> list[Any]:
    return [model.model_validate_json(b) for b in bus.published.get(topic, [])]


@pytest.fixture
def batch_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "batch"
    (folder / "imgs").mkdir(parents=True)
    (folder / "imgs" / "a.png").write_bytes(b"png")
    (folder / "docs").mkdir()
    (folder / "docs" / "b.pdf").write_bytes(b"pdf")
    with (folder / "huge.bin").open("wb") as f:
        f.truncate(100 * MIB + 1)  # sparse: over the 100 MiB limit without the disk space
    return folder


def test_mixed_file_lands_on_the_right_topics(batch_dir: Path) -> None:
    # Given a file with good, bad, duplicate and blank lines and file references
    lines = [
        jl({"id": "r1", "asks": [ask(0, images=["imgs/a.png"])], "answers": None}),  # 1 ok
        "",  # 2 blank
        jl(
            {
                "id": "r2",
                "asks": [ask(0, image=str(batch_dir / "imgs/a.png")), ask(1, files=["docs/b.pdf"])],
                "extra": {"k": "中"},
            }
        ),  # 3 ok
        '{"id": "r3", "asks": [',  # 4 invalid JSON
        jl({"id": "r1", "asks": [ask(0)]}),  # 5 duplicate id
        jl({"id": "r4", "asks": [ask(0, images=["imgs/missing.png"])]}),  # 6 missing image
        jl({"id": "r5", "asks": [ask(0, files=["huge.bin"])]}),  # 7 oversize file
        "   ",  # 8 blank
        jl({"id": "r6", "asks": [ask(0), ask(1)]}),  # 9 ok
        "[1, 2]",  # 10 not an object
    ]
    path = batch_dir / "input.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    bus = MemoryBus(record=True)

    # When it is ingested
    summary = run_ingest(path, bus)

    # Then valid records are asks, in order, byte-identical, with the folder as base_dir
    asks = messages(bus, bus.topics.asks, AskMessage)
    assert [(a.seq, a.record.id) for a in asks] == [(0, "r1"), (1, "r2"), (6, "r6")]
    assert {a.batch for a in asks} == {"b1"}
    assert {a.base_dir for a in asks} == {str(batch_dir)}
    raw = [json.loads(b)["record"] for b in bus.published[bus.topics.asks]]
    assert raw == [json.loads(lines[0]), json.loads(lines[2]), json.loads(lines[8])]
    # ...bad lines are results with a reject and an iErr, never asks
    results = messages(bus, bus.topics.results, ResultMessage)
    got = [(r.seq, r.reject.line, r.reject.field, r.record.id) for r in results]
    assert got == [
        (2, 4, None, "line:4"),
        (3, 5, "id", "r1"),
        (4, 6, "asks[0].images[0]", "r4"),
        (5, 7, "asks[0].files[0]", "r5"),
        (7, 10, None, "line:10"),
    ]
    assert all(r.record.iErr and r.record.iErr.code == 422 for r in results)
    assert all(r.reject.source == str(path) for r in results)
    assert "over the 104857600-byte limit" in results[3].reject.reason
    # ...and one manifest counting the non-blank lines, after everything else
    (manifest,) = messages(bus, bus.topics.batches, BatchManifest)
    assert (manifest.batch, manifest.total, manifest.input) == ("b1", 8, str(path))
    assert (summary.total, summary.published, summary.rejected) == (8, 3, 5)
    assert summary.passed_through == 0
    assert summary.rejected_by_reason == {
        "invalid_json": 1,
        "duplicate_id": 1,
        "missing_file": 1,
        "file_too_large": 1,
        "not_object": 1,
    }


def test_fix_passes_done_records_through_and_reruns_failed(tmp_path: Path) -> None:
    done = {"id": "a", "asks": [ask(0)], "answers": [{"message_id": "m1"}], "iErr": None}
    failed = {"id": "b", "asks": [ask(0)], "answers": [], "iErr": {"code": 429, "message": "x"}}
    fresh = {"id": "c", "asks": [ask(0)]}
    path = tmp_path / "out.jsonl"
    path.write_text("\n".join(jl(o) for o in (done, failed, fresh)) + "\n")
    bus = MemoryBus(record=True)

    summary = run_ingest(path, bus, fix=True)

    (passed,) = messages(bus, bus.topics.results, ResultMessage)
    assert passed.seq == 0 and passed.reject is None
    assert json.loads(bus.published[bus.topics.results][0])["record"] == done
    asks = messages(bus, bus.topics.asks, AskMessage)
    assert [(a.seq, a.record.id, a.record.iErr, a.record.answers) for a in asks] == [
        (1, "b", None, None),
        (2, "c", None, None),
    ]
    assert (summary.total, summary.published, summary.passed_through) == (3, 2, 1)
    assert messages(bus, bus.topics.batches, BatchManifest)[0].total == 3


def test_over_long_line_and_too_big_message_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    big = jl({"id": "big", "asks": [{"id": "p", "content": "x" * 3000}]})
    path.write_text("\n".join([jl({"id": "ok", "asks": [ask(0)]}), "y" * 9000, big]) + "\n")
    bus = MemoryBus(record=True)

    summary = run_ingest(path, bus, max_line_bytes=8000, max_message_bytes=2000)

    assert [m.record.id for m in messages(bus, bus.topics.asks, AskMessage)] == ["ok"]
    results = messages(bus, bus.topics.results, ResultMessage)
    assert [(r.reject.line, r.record.id) for r in results] == [(2, "line:2"), (3, "big")]
    assert "9001 bytes" in results[0].reject.reason
    assert "bus limit" in results[1].reject.reason
    assert all(len(b) <= 2000 for b in bus.published[bus.topics.results])
    assert summary.rejected_by_reason == {"line_too_long": 1, "message_too_large": 1}


@pytest.mark.parametrize("name", ["example.jsonl", "example_2.jsonl"])
def test_shared_examples_ingest_without_rejects(name: str) -> None:
    bus = MemoryBus(record=True)

    summary = run_ingest(EXAMPLES / name, bus, publish_batch_size=128)

    assert (summary.total, summary.published, summary.rejected) == (1000, 1000, 0)
    asks = messages(bus, bus.topics.asks, AskMessage)
    assert [a.seq for a in asks] == list(range(1000))
    assert {a.base_dir for a in asks} == {str(EXAMPLES)}


def test_stdin_resolves_paths_against_the_current_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "pic.png").write_bytes(b"p")
    data = jl({"id": "s", "asks": [ask(0, images=["pic.png"])]}) + "\n"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data.encode())))
    bus = MemoryBus(record=True)

    async def go() -> IngestSummary:
        with open_input("-") as src:
            assert (src.name, src.path) == ("<stdin>", None)
            return await ingest(
                read_lines(src.stream, 1024), bus, batch="s", source=src.name, base_dir=src.base_dir
            )

    summary = asyncio.run(go())

    assert (summary.total, summary.published, summary.rejected) == (1, 1, 0)
    assert messages(bus, bus.topics.asks, AskMessage)[0].base_dir == str(tmp_path)
    assert messages(bus, bus.topics.batches, BatchManifest)[0].input is None


def test_progress_is_reported_and_bad_batch_id_refused(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text("".join(jl({"id": f"r{i}", "asks": [ask(0)]}) + "\n" for i in range(2500)))
    seen: list[tuple[int, float]] = []

    summary = run_ingest(path, MemoryBus(), progress=lambda s: seen.append((s.total, s.seconds)))

    assert [t for t, _ in seen] == [1000, 2000, 2500]
    assert seen[-1][1] == summary.seconds > 0
    with pytest.raises(ValueError, match="batch id"):
        run_ingest(path, MemoryBus(), batch="")


def test_publish_failure_stops_ingest_without_a_manifest(tmp_path: Path) -> None:
    class FailingBus(MemoryBus):
        async def _publish(self, topic: str, bodies: list[bytes]) -> None:
            if topic == self.topics.asks:
                raise PublishError("nsqd went away")
            await super()._publish(topic, bodies)

    path = tmp_path / "in.jsonl"
    path.write_text("".join(jl({"id": f"r{i}", "asks": [ask(0)]}) + "\n" for i in range(50)))
    bus = FailingBus(record=True)

    with pytest.raises(PublishError, match="went away"):
        run_ingest(path, bus, publish_batch_size=10)

    assert bus.topics.batches not in bus.published


def test_metrics_count_lines_and_rejects(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(jl({"id": "a", "asks": [ask(0)]}) + "\nnope\n")
    before_lines = REGISTRY.get_sample_value("gpt4batch_ingest_lines_total") or 0
    label = {"reason": "invalid_json"}
    before_bad = REGISTRY.get_sample_value("gpt4batch_ingest_rejected_total", label) or 0

    run_ingest(path, MemoryBus())

    assert REGISTRY.get_sample_value("gpt4batch_ingest_lines_total") == before_lines + 2
    assert REGISTRY.get_sample_value("gpt4batch_ingest_rejected_total", label) == before_bad + 1


def test_skipped_lines_still_count_for_duplicate_ids(tmp_path: Path) -> None:
    """A resumed run skips done lines; a later line repeating a skipped id is still refused."""
    path = tmp_path / "in.jsonl"
    path.write_text(
        '{"id": "a", "asks": [{"id": "x", "content": "q"}]}\n'
        '{"id": "a", "asks": [{"id": "x", "content": "again"}]}\n'
    )
    bus = MemoryBus(record=True)
    summary = run_ingest(path, bus, skip=lambda seq: seq == 0)
    assert (summary.skipped, summary.rejected) == (1, 1)
    assert bus.topics.asks not in bus.published


def test_async_lines_off_the_loop_keep_order_duplicates_and_skips(tmp_path: Path) -> None:
    """An async iterable of lines, validated in a worker thread over several batches."""
    from gpt4batch.services.ingest import ingest as ingest_module
    from gpt4batch.services.ingest.reader import RawLine

    count = ingest_module.BATCH_LINES * 2 + 5
    rows = [jl({"id": f"r{n}", "asks": [ask(n)]}).encode() for n in range(count)]
    rows.append(jl({"id": "r7", "asks": [ask(7)]}).encode())  # a duplicate of line 8

    async def lines() -> Any:
        for number, data in enumerate(rows, start=1):
            yield RawLine(number, data, len(data) + 1)

    async def go() -> IngestSummary:
        return await ingest(
            lines(), bus, batch="b1", source="x", base_dir=tmp_path,
            skip=lambda seq: seq == 3, off_loop=True,
        )  # fmt: skip

    bus = MemoryBus(record=True)
    summary = asyncio.run(asyncio.wait_for(go(), 60))
    asks = messages(bus, bus.topics.asks, AskMessage)
    assert (summary.total, summary.skipped, summary.rejected) == (count + 1, 1, 1)
    assert [m.seq for m in asks] == [n for n in range(count) if n != 3]
    assert [m.record.id for m in asks][:3] == ["r0", "r1", "r2"]
    (refused,) = messages(bus, bus.topics.results, ResultMessage)
    assert refused.seq == count and "duplicate id 'r7'" in refused.reject.reason
