"""Rejects and download rows beside the output file, one file per batch with --out-dir."""

from __future__ import annotations

import json
from pathlib import Path

from gpt4batch.common.messages import DownloadResult
from gpt4batch.services.sink.sink import batch_file_stem
from tests.sink.helpers import DELIVERY, ids, make_sink, result, run


def download(local: str, ok: bool = True) -> DownloadResult:
    return DownloadResult(
        batch="b1",
        record_id="r1",
        ask_id="a1",
        url="https://files.example/x?sig=abc",
        local=local,
        ok=ok,
        size=3 if ok else None,
        sha256="00" * 32 if ok else None,
        error=None if ok else "404",
    )


def test_reject_goes_to_output_and_rejects_file(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def scenario() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r1", seq=0), DELIVERY)
        # A refused line repeating r1's id still gets its own output line
        await sink.handle_result(result("r1", seq=1, reject_line=2), DELIVERY)
        await sink.handle_result(result("r1", seq=1, reject_line=2), DELIVERY)
        await sink.close()

    run(scenario())
    assert ids(out) == ["r1", "r1"]
    rows = [json.loads(line) for line in (tmp_path / "out.rejects.jsonl").read_text().splitlines()]
    assert rows == [
        {"line": 2, "id": "r1", "field": None, "reason": "duplicate id", "source": None}
    ]


def test_reject_and_valid_record_with_same_id_survive_restart(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def first() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r1", seq=1, reject_line=2), DELIVERY)
        await sink.close()

    async def second() -> None:
        sink, _ = make_sink(out)
        await sink.start()
        await sink.handle_result(result("r1", seq=1, reject_line=2), DELIVERY)  # duplicate
        await sink.handle_result(result("r1", seq=0), DELIVERY)  # the valid one, not a dup
        await sink.close()

    run(first())
    run(second())
    assert ids(out) == ["r1", "r1"]
    assert len((tmp_path / "out.rejects.jsonl").read_text().splitlines()) == 1


def test_download_results_are_recorded_once(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"

    async def run_once(msgs: list[DownloadResult]) -> None:
        sink, _ = make_sink(out)
        await sink.start()
        for msg in msgs:
            await sink.handle_download(msg, DELIVERY)
        await sink.close()

    run(run_once([download("a.png"), download("a.png"), download("b.txt", ok=False)]))
    run(run_once([download("a.png"), download("b.txt", ok=True)]))
    rows = [json.loads(x) for x in (tmp_path / "out.downloads.jsonl").read_text().splitlines()]
    assert [(r["local"], r["ok"]) for r in rows] == [
        ("a.png", True),
        ("b.txt", False),
        ("b.txt", True),
    ]


def test_out_dir_writes_one_file_per_batch(tmp_path: Path) -> None:
    async def scenario() -> None:
        sink, _ = make_sink(out_dir=tmp_path)
        await sink.start()
        await sink.handle_result(result("r1", batch="alpha"), DELIVERY)
        await sink.handle_result(result("r1", batch="../beta"), DELIVERY)
        await sink.close()

    run(scenario())
    assert ids(tmp_path / "alpha.jsonl") == ["r1"]
    beta = f"{batch_file_stem('../beta')}.jsonl"  # made safe, and never shared
    assert beta.startswith("beta-")
    assert ids(tmp_path / beta) == ["r1"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["alpha.jsonl", beta])
