"""The compact id index used for duplicate detection."""

from __future__ import annotations

from gpt4batch.common.idindex import IdIndex


def test_first_line_wins_and_survives_growth() -> None:
    index = IdIndex(capacity=4)
    for n in range(5000):
        assert index.setdefault(f"id {n}", n + 1) == n + 1
    assert len(index) == 5000
    for n in range(0, 5000, 7):
        assert index.setdefault(f"id {n}", 99_999) == n + 1  # a repeat names the first line
        assert f"id {n}" in index
    assert "id 5000" not in index
    assert len(index) == 5000


def test_ids_that_look_alike_stay_apart() -> None:
    index = IdIndex()
    ids = ["", " ", "a", "a ", "A", "line:1", "é", "e\u0301", "0", "00"]
    for n, record_id in enumerate(ids, start=1):
        assert index.setdefault(record_id, n) == n
    assert len(index) == len(ids)
