"""ingest → caller → downloader → sink as separate processes over real nsqd, with the simulator."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, count_lines, read_jsonl, wait_for

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "5") as server:
        yield server


def caller_flags(mock: MockUpstream, *extra: str) -> list[str]:
    return [
        "--base-url", mock.url, "--access-token", mock.token, "--qps", "0",
        "--concurrency", "100", "--retry-base-delay", "0.01", *extra,
    ]  # fmt: skip


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    with path.open("w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False))
            fh.write("\n")
    return path


def mixed_input(folder: Path) -> tuple[Path, int]:
    """Multi-turn, images, files, pictures with hostile names, bad lines, a duplicate id."""
    shutil.copy(DATA / "1.jpeg", folder / "1.jpeg")
    (folder / "docs").mkdir()
    shutil.copy(DATA / "example.txt", folder / "docs" / "example.txt")
    lines: list[Any] = []
    for i in range(40):
        asks = [
            {"id": "a1", "content": f"describe {i}", "images": ["1.jpeg"]},
            {"id": "a2", "content": f"read {i}", "files": ["docs/example.txt"]},
            {"id": "a3", "content": f"summarise {i}"},
        ]
        lines.append({"id": f"mixed-{i}", "asks": asks, "extra": {"n": i}})
    lines.append({"id": "pic-1", "asks": [{"id": "p", "content": "draw a cat"}]})
    lines.append({"id": "pic-2", "asks": [{"id": "p", "content": "画 hostile-name please"}]})
    lines.append({"id": "pic-3", "asks": [{"id": "p/../x", "content": "draw hostile-name"}]})
    lines.append("{not json")
    lines.append({"asks": [{"id": "a", "content": "no id"}]})
    lines.append({"id": "missing-file", "asks": [{"id": "a", "content": "x", "files": ["nope"]}]})
    lines.append({"id": "mixed-0", "asks": [{"id": "a", "content": "duplicate id"}]})
    lines.append("")  # blank lines are skipped, not counted
    return write_jsonl(folder / "input.jsonl", lines), len(lines) - 1


def answer_texts(record: dict[str, Any]) -> list[str]:
    texts = []
    for answer in record.get("answers") or []:
        text = answer["contents"][-1]["message"]["content"]["parts"][0]
        texts.append(text)
    return texts


def test_mixed_batch_end_to_end(procs: ServiceProcs, mock: MockUpstream, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    source, expected = mixed_input(inputs)
    out, downloads = tmp_path / "out" / "result.jsonl", tmp_path / "downloads"
    out.parent.mkdir()
    before = mock.stats()

    procs.start("sink", "sink", "-o", str(out))
    procs.start(
        "downloader", "downloader", "--download-dir", str(downloads), *mock.download_allowance
    )
    procs.start("caller", "caller", *caller_flags(mock, "--allowed-dirs", str(inputs)))
    procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "mixed")
    done = out.with_name("result.done")
    wait_for(done.exists, 90, "the batch to complete", procs.assert_alive)

    records = read_jsonl(out)
    assert len(records) == expected  # one line per input line, no duplicates
    ids = [r["id"] for r in records]
    assert ids.count("mixed-0") == 2  # the record, and the refused line repeating its id
    assert len(set(ids)) == expected - 1
    by_id = {r["id"]: r for r in records if r["iErr"] is None or r["id"] != "mixed-0"}

    for i in range(40):
        record = by_id[f"mixed-{i}"]
        assert record["iErr"] is None
        assert record["extra"] == {"n": i}
        texts = answer_texts(record)
        assert [t.split(":", 1)[1].split("(")[0].strip() for t in texts] == [
            f"describe {i}",
            f"read {i}",
            f"summarise {i}",
        ]
    assert mock.stats()["chain_errors"] == before["chain_errors"]

    rejects = read_jsonl(out.with_name("result.rejects.jsonl"))
    assert len(rejects) == 4
    assert {r["line"] for r in rejects} == {44, 45, 46, 47}
    failed = [r for r in records if r["iErr"] is not None]
    assert len(failed) == 4 and all(r["iErr"]["code"] == 422 for r in failed)

    # Downloads: every planned file arrives, bytes equal what the simulator serves,
    # and nothing lands outside the download folder.
    planned = [
        spec
        for r in records
        for answer in r.get("answers") or []
        for spec in answer.get("spec_downloads") or []
    ]
    assert len(planned) >= 3
    wait_for(
        lambda: all((downloads / s["local"]).exists() for s in planned),
        30,
        "downloads",
        procs.assert_alive,
    )
    for spec in planned:
        served = httpx.get(spec["origin"], timeout=10).content
        assert (downloads / spec["local"]).read_bytes() == served
    assert all(p.parent == downloads for p in downloads.rglob("*"))
    outside = [p for p in tmp_path.rglob("*") if p.is_file() and "passwd" in p.name.lower()]
    assert all(p.parent == downloads for p in outside)
    wait_for(
        lambda: count_lines(out.with_name("result.downloads.jsonl")) >= len(planned),
        30,
        "download results in the sink",
    )


def test_examples_and_fix_resume(procs: ServiceProcs, mock: MockUpstream, tmp_path: Path) -> None:
    """The bundled examples run clean; `--fix` on a run with failures re-runs only those."""
    out = tmp_path / "examples.jsonl"
    procs.start("sink", "sink", "-o", str(out))
    procs.start("caller", "caller", *caller_flags(mock))
    lines = (EXAMPLES / "example_2.jsonl").read_text().splitlines()[:300]
    lines += (EXAMPLES / "example.jsonl").read_text().splitlines()[-200:]
    source = write_jsonl(tmp_path / "examples-in.jsonl", [json.loads(x) for x in lines])
    procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "ex")
    wait_for(out.with_name("examples.done").exists, 90, "examples", procs.assert_alive)
    records = read_jsonl(out)
    assert len(records) == 500
    assert all(r["iErr"] is None and len(r["answers"]) == len(r["asks"]) for r in records)

    # Make a previous output with 3 failures and resume it into a new output.
    broken = [dict(r) for r in records]
    for r in broken[:3]:
        r["iErr"] = {"code": 502, "message": "bad gateway"}
        r["answers"] = r["answers"][:1]
    previous = write_jsonl(tmp_path / "previous.jsonl", broken)
    procs.stop("sink")
    out2 = tmp_path / "resumed.jsonl"
    procs.start("sink2", "sink", "-o", str(out2))
    calls_before = mock.stats()["total_calls"]
    procs.run_once("ingest2", "ingest", "-i", str(previous), "--fix", "--batch", "ex-fix")
    wait_for(out2.with_name("resumed.done").exists, 60, "resume", procs.assert_alive)
    resumed = {r["id"]: r for r in read_jsonl(out2)}
    assert len(resumed) == 500
    assert all(r["iErr"] is None for r in resumed.values())
    # Only the three failed conversations were sent again (1 ask each in example_2).
    assert mock.stats()["total_calls"] - calls_before == 3
    for r in broken[3:]:
        assert resumed[r["id"]] == r  # passed through untouched


def ledger_of(out: Path) -> Path:
    """The batch ledger's journal beside `out` (the output itself is written at the end)."""
    return out.with_name(out.stem + ".journal.jsonl")


def test_gizmo_caller_and_redelivery_after_kill(
    procs: ServiceProcs, tmp_path: Path, mock: MockUpstream
) -> None:
    """kill -9 of the caller mid-batch: the restarted caller finishes, the sink drops repeats."""
    with MockUpstream("--latency-ms", "20") as slow:
        out = tmp_path / "g.jsonl"
        procs.start("sink", "sink", "-o", str(out))
        gizmo = ("--gizmo-id", "g-HMNcP6w7d", "--model", "gpt-4-gizmo", "--concurrency", "20")
        procs.start("caller", "caller", *caller_flags(slow, *gizmo))
        records = [
            {
                "id": f"g{i}",
                "asks": [{"id": "a", "content": f"q{i}"}, {"id": "b", "content": "more"}],
            }
            for i in range(300)
        ]
        source = write_jsonl(tmp_path / "g-in.jsonl", records)
        procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "g")
        wait_for(lambda: count_lines(ledger_of(out)) >= 41, 60, "some results", procs.assert_alive)
        procs.kill("caller")
        procs.start("caller2", "caller", *caller_flags(slow, *gizmo))
        wait_for(out.with_name("g.done").exists, 90, "the batch after a kill", procs.assert_alive)
        stats = slow.stats()
    lines = read_jsonl(out)
    assert len(lines) == 300
    assert len({r["id"] for r in lines}) == 300
    assert all(r["iErr"] is None for r in lines)
    assert stats["calls"].get("gizmos", 0) >= 600
    assert stats["calls"].get("all-tools", 0) == 0
    assert stats["chain_errors"] == 0


def test_sink_killed_mid_batch_loses_and_duplicates_nothing(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    """kill -9 of the sink: unfinished results are redelivered, the restarted sink dedupes."""
    with MockUpstream("--latency-ms", "10") as sim:
        out = tmp_path / "k.jsonl"
        procs.start("sink", "sink", "-o", str(out), "--fsync-interval-ms", "200")
        procs.start("caller", "caller", *caller_flags(sim, "--concurrency", "20"))
        records = [{"id": f"k{i}", "asks": [{"id": "a", "content": f"q{i}"}]} for i in range(400)]
        procs.run_once("ingest", "ingest", "-i", str(write_jsonl(tmp_path / "k-in.jsonl", records)))
        wait_for(lambda: count_lines(ledger_of(out)) >= 61, 60, "some results", procs.assert_alive)
        procs.kill("sink")
        at_kill = count_lines(ledger_of(out)) - 1  # minus the header
        procs.start("sink2", "sink", "-o", str(out))
        wait_for(out.with_name("k.done").exists, 90, "the batch after a kill", procs.assert_alive)
    assert at_kill < 400  # the kill really was mid-batch
    lines = read_jsonl(out)  # every line parses: no torn write survived
    assert sorted(r["id"] for r in lines) == sorted(f"k{i}" for i in range(400))
