"""The compact id index used for duplicate detection."""

from __future__ import annotations

import pytest

from gpt4batch.common import idindex
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


class Colliding(str):
    """An id whose hash is the same as every other Colliding id's (all 64 bits)."""

    def __hash__(self) -> int:
        return 42


def test_ids_with_the_same_hash_are_never_reported_as_duplicates() -> None:
    index = IdIndex(capacity=4)
    ids = [Colliding(f"c{n}") for n in range(300)]
    for n, record_id in enumerate(ids, start=1):
        assert index.setdefault(record_id, n) == n  # each one new, though all hashes agree
    for n, record_id in enumerate(ids, start=1):
        assert index.setdefault(Colliding(str(record_id)), 10_000) == n  # a real repeat
    assert index.verified > 0  # the ids were read back from disk and compared
    assert len(index) == 300


def test_fingerprint_matches_are_checked_against_the_stored_id() -> None:
    index = IdIndex()
    for n in range(20_000):
        assert index.setdefault(f"id-{n}", n + 1) == n + 1
    # 8-bit fingerprints along the probe chains: many matches were read back, none taken.
    assert index.verified > 0
    assert len(index) == 20_000


def test_memory_holds_only_the_slots() -> None:
    index = IdIndex()
    for n in range(100_000):
        index.setdefault(f"a rather long record id number {n:>12}", n + 1)
    slots = index._slots  # the only per-id structure in memory
    assert slots.itemsize == 4 and len(slots) <= 4 * len(index)
    assert index.setdefault(f"a rather long record id number {99_999:>12}", 0) == 100_000


def test_unusual_ids_come_back_exactly() -> None:
    index = IdIndex()
    ids = ["\udcff", "\ud800x", "日本語", "a\x00b", "x" * 5000]
    for n, record_id in enumerate(ids, start=1):
        assert index.setdefault(record_id, n) == n
    for n, record_id in enumerate(ids, start=1):
        assert index.setdefault(record_id, 0) == n
        assert record_id in index
    assert "\udcfe" not in index


def test_slots_widen_past_the_narrow_entry_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(idindex._NARROW, "max_entries", 100)
    index = IdIndex(capacity=4)
    for n in range(1000):
        assert index.setdefault(f"w{n}", n + 1) == n + 1
    assert index._slots.itemsize == 8
    for n in range(1000):
        assert index.setdefault(f"w{n}", 0) == n + 1


def test_close_empties_the_index() -> None:
    index = IdIndex()
    index.setdefault("a", 1)
    index.close()
    assert len(index) == 0 and "a" not in index
    assert index.setdefault("a", 7) == 7
