"""The parts of expiry and partial output that need no NSQ: durations, the expired files
writer, and paging the journal by line offset (issue 22, items 4 and 6)."""

from __future__ import annotations

import io
import json
import time
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

from gpt4batch.common.messages import AskMessage, Record
from gpt4batch.services.gateway import expiry
from gpt4batch.services.gateway.convert import convert_file
from gpt4batch.services.gateway.file_expiry import FileSweeper
from gpt4batch.services.gateway.outputs import write_result_files
from gpt4batch.services.gateway.partial import STRIDE, LineOffsets, _next_chunk, find_page
from gpt4batch.services.gateway.store import BatchRecord, Store
from gpt4batch.services.gateway.windows import (
    BadDuration,
    expires_after_seconds,
    window_seconds,
)
from gpt4batch.services.sink.ledger import entry_line
from gpt4batch.services.sink.ledger.journal import header_line


@pytest.mark.parametrize(
    ("window", "seconds"),
    [("24h", 86400), ("30s", 30), ("10m", 600), ("2h", 7200), ("7d", 604800), ("30d", 2592000)],
)
def test_windows_accepted(window: str, seconds: int) -> None:
    assert window_seconds(window) == seconds


@pytest.mark.parametrize("window", ["", "24", "0s", "24x", "31d", "1h30m", "-5s", " 5s", 24, None])
def test_windows_refused(window: Any) -> None:
    with pytest.raises(BadDuration, match="completion_window"):
        window_seconds(window)


def test_expires_after_bounds() -> None:
    policy = {"anchor": "created_at", "seconds": 3600}
    assert expires_after_seconds(policy, "expires_after") == 3600
    assert expires_after_seconds({**policy, "seconds": "7200"}, "expires_after") == 7200
    assert expires_after_seconds(None, "expires_after") is None
    assert expires_after_seconds({**policy, "seconds": 5}, "x", minimum=2) == 5
    for bad in (
        {**policy, "seconds": 3599},
        {**policy, "seconds": 2592001},
        {**policy, "seconds": True},
        {**policy, "anchor": "last_active_at"},
        {"seconds": 3600},
        "3600",
    ):
        with pytest.raises(BadDuration, match="output_expires_after"):
            expires_after_seconds(bad, "output_expires_after")


def test_due_only_past_the_window_and_once() -> None:
    batch = BatchRecord("batch_x", "file-x", "/v1/chat/completions", "30s", created_at=1000)
    batch.status = "in_progress"
    assert batch.expires_at == 1030
    assert not expiry.is_due(batch, 1029.9)
    assert expiry.wait_seconds(batch, 5, 1028) == 2
    assert expiry.is_due(batch, 1030)
    expiry.begin(batch, 1031)
    assert (batch.status, batch.expiring_at, batch.finalizing_at) == ("finalizing", 1031, 1031)
    assert not expiry.is_due(batch, 2000)
    batch.total, batch.published = 10, 4
    assert not expiry.drained(batch, 3)
    assert expiry.drained(batch, 4) and batch.expiring_at == 1031
    assert expiry.drained(batch, 10) and batch.expiring_at is None  # all done: completed


def _result(batch: str, seq: int, custom_id: str, ok: bool) -> bytes:
    record: dict[str, Any] = {"id": custom_id, "asks": [{"id": "request", "content": "q"}]}
    if ok:
        record["answers"] = [{"choices": [{"message": {"content": f"a{seq}"}}], "id": "c"}]
    else:
        record["iErr"] = {"code": 500, "message": "upstream failed"}
    return entry_line(seq, ok, json.dumps(record))


def test_expired_batch_files(tmp_path: Path) -> None:
    batch = BatchRecord("batch_e", "file-x", "/v1/chat/completions", "5s", created_at=1)
    batch.total = 6
    asks = tmp_path / "asks.jsonl"
    with asks.open("w") as fh:
        for seq in range(6):
            record = Record(id=f"r{seq}", asks=[{"id": "request", "content": "q"}])
            fh.write(AskMessage(batch="batch_e", seq=seq, record=record).model_dump_json() + "\n")
    journal = tmp_path / "journal.jsonl"
    stopped = json.dumps({"id": "r4", "asks": [], "iErr": {"code": 586, "message": "stopped"}})
    journal.write_bytes(
        header_line("batch_e", 0).encode()
        + _result("batch_e", 2, "r2", False)
        + _result("batch_e", 0, "r0", True)
        + entry_line(4, False, stopped)  # a caller skipped it after the stop
        + _result("batch_e", 3, "r3", True)
    )

    written, counts = write_result_files(batch, journal, tmp_path, asks=asks)

    output = [json.loads(x) for x in written["output"][0].read_text().splitlines()]
    errors = [json.loads(x) for x in written["error"][0].read_text().splitlines()]
    assert [x["custom_id"] for x in output] == ["r0", "r3"]
    assert [x["custom_id"] for x in errors] == ["r1", "r2", "r4", "r5"]
    expired = [x for x in errors if x["custom_id"] != "r2"]
    for line in expired:
        assert line["response"] is None and line["id"].startswith("batch_req_")
        assert line["error"]["code"] == "batch_expired" and line["error"]["message"]
    assert errors[1]["response"]["status_code"] == 500  # r2 ran and failed: not expired
    # as the real API reports an expired batch: the expired requests are neither
    assert counts == {"total": 6, "completed": 2, "failed": 1}
    assert (written["output"][1], written["error"][1]) == (2, 4)


def _journal(path: Path, oks: int, every_failed: int = 3) -> None:
    with path.open("wb") as fh:
        fh.write(header_line("b", 0).encode())
        seq = 0
        for n in range(oks):
            if n % every_failed == 0:
                fh.write(_result("b", seq, f"f{seq}", False))
                seq += 1
            fh.write(_result("b", seq, f"r{n}", True))
            seq += 1


def _ids(journal: Path, page: Any) -> list[str]:
    with journal.open("rb") as fh:
        fh.seek(page.start)
        data = fh.read(page.end - page.start)
    return [
        json.loads(line[line.index(b'"record":') + 9 : -1])["id"]
        for line in data.splitlines()
        if b'"ok":true' in line
    ]


def test_pages_by_line_offset(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    total = STRIDE * 2 + 10
    _journal(journal, total)
    offsets = LineOffsets()

    first = find_page(journal, "b", 0, 5, offsets)
    assert (first.lines, first.has_more) == (5, True)
    assert _ids(journal, first) == [f"r{n}" for n in range(5)]
    middle = find_page(journal, "b", STRIDE + 3, 4, offsets)
    assert _ids(journal, middle) == [f"r{n}" for n in range(STRIDE + 3, STRIDE + 7)]
    last = find_page(journal, "b", total - 2, 100, offsets)
    assert (last.lines, last.has_more) == (2, False)
    assert _ids(journal, last) == [f"r{total - 2}", f"r{total - 1}"]
    beyond = find_page(journal, "b", total + 5, 10, LineOffsets())
    assert (beyond.lines, beyond.has_more, beyond.start) == (0, False, beyond.end)
    # a remembered offset is used: the same page again scans from it
    assert offsets.nearest("b", total)[0] == total
    assert find_page(journal, "b", 0, total, LineOffsets()).lines == total


def test_a_line_being_written_is_not_served(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    _journal(journal, 3)
    whole = journal.stat().st_size
    with journal.open("ab") as fh:
        fh.write(_result("b", 99, "half", True)[:-20])  # no newline yet
    page = find_page(journal, "b", 0, 100, LineOffsets())
    assert (page.lines, page.end) == (3, whole)
    assert find_page(tmp_path / "none.jsonl", "b", 0, 10, LineOffsets()).lines == 0


def test_sweeper_deletes_due_files(tmp_path: Path) -> None:
    store = Store(tmp_path)
    files = []
    for expires in (None, 10, 1000):
        spooled = store.spool_path()
        spooled.write_bytes(b"x")
        files.append(store.add_file("a.jsonl", "batch", spooled, "o", expires))
    keep, soon, later = files
    assert soon.api()["expires_at"] == soon.created_at + 10 and keep.api()["expires_at"] is None
    assert store.next_file_expiry() == soon.expires_at

    assert FileSweeper(store).sweep(time.time() + 20) == 1
    assert store.get_file(soon.id, "o") is None and not store.file_path(soon.id).exists()
    assert store.get_file(keep.id, "o") and store.get_file(later.id, "o")
    store.close()


def test_a_page_is_found_and_streamed_in_bounded_memory(tmp_path: Path) -> None:
    journal = tmp_path / "journal.jsonl"
    answer = "x" * 4000
    with journal.open("wb") as fh:
        fh.write(header_line("b", 0).encode())
        for seq in range(5000):  # ~20 MB
            record = {"id": f"r{seq}", "answers": [{"choices": [{"message": {"content": answer}}]}]}
            fh.write(entry_line(seq, True, json.dumps(record)))
    tracemalloc.start()
    try:
        page = find_page(journal, "b", 0, 5000, LineOffsets())
        sent = lines = 0
        with journal.open("rb") as fh:
            fh.seek(page.start)
            left = page.end - page.start
            while left > 0:
                chunk, read = _next_chunk(fh, left, "batch_b", "/v1/chat/completions")
                left -= read
                sent += len(chunk)
                lines += chunk.count(b"\n")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (page.lines, lines) == (5000, 5000) and sent > 20_000_000
    assert peak < 2_000_000, peak  # a few lines and one chunk, not the 20 MB


def test_an_input_file_deleted_before_validation_fails_the_batch_once(tmp_path: Path) -> None:
    """An upload's expiry (or a DELETE) may come before its batch is validated: one error,
    not a validation retried for ever."""
    result = convert_file(
        tmp_path / "file-gone",
        io.BytesIO(),
        owned_files=frozenset(),
        batch="batch_g",
        endpoint="/v1/chat/completions",
        max_line_bytes=4096,
        max_msg_size=65536,
    )
    assert result.error_count == 1
    assert result.errors[0]["code"] == "file_not_found"
    assert (result.errors[0]["line"], result.errors[0]["param"]) == (None, "input_file_id")
