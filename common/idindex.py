"""A map from record id to the number of the line it first appeared on, for duplicate
detection, holding 4 bytes per slot in memory and the ids themselves on disk.

Duplicate detection must remember every id of an input. A `dict` costs ~113 MB
per million ids; packed 64-bit hashes plus line numbers still 24 MB (36 MB
while doubling). Here two unlinked temporary files hold one entry per distinct
id, in the order they came:

- *records*: fixed 32-byte rows (64-bit hash, line, offset and length of the id);
- *ids*: the ids in UTF-8, one after another;

and memory holds only an open-addressing table (at most half full) of 32-bit
slots: 8 bits of the id's hash (a fingerprint) and the entry's number.

A lookup compares fingerprints along the probe chain; only on a fingerprint
match (the id itself, or another id with the same 8 bits: a few lookups in a
thousand) is the entry read back and the ids compared, so a duplicate is never
reported falsely. Doubling the table refills it from the hashes in *records*
(read in 1 MB chunks); the old table is dropped first. Memory: 8 bytes per id
at most, 8 MB at a million ids. Past 2^24 - 1 ids the slots widen to 64 bits
(16-bit fingerprints, 40-bit entry numbers).
"""

from __future__ import annotations

import os
import struct
import sys
import tempfile
from array import array
from collections.abc import Iterator
from typing import IO

_RECORD = struct.Struct("<QQQQ")  # hash, line, id offset, id length
_MASK64 = (1 << 64) - 1
#: Records read at once when the table is refilled.
_READ_RECORDS = 1 << 15


class _Layout:
    """How a slot packs (fingerprint, entry number + 1); 0 is an empty slot."""

    def __init__(self, typecode: str, fp_bits: int, ref_bits: int) -> None:
        self.typecode, self.ref_bits = typecode, ref_bits
        self.fp_shift = 64 - fp_bits  # a fingerprint is the hash's top bits
        self.ref_mask = (1 << ref_bits) - 1
        self.max_entries = self.ref_mask - 1


_NARROW = _Layout("I", 8, 24)
_WIDE = _Layout("Q", 16, 40)


class IdIndex:
    """`setdefault(id, line)` → the line the id was first seen on."""

    def __init__(self, capacity: int = 1024, *, folder: str | None = None) -> None:
        self._folder = folder
        self._capacity = capacity
        self._records: IO[bytes] | None = None
        self._ids: IO[bytes] | None = None
        self._reset()
        self.verified = 0
        """Entries read back to compare ids (fingerprint matches)."""

    def _reset(self) -> None:
        slots = 1 << max(4, (self._capacity * 2 - 1).bit_length())
        self._use(_NARROW, slots)
        self._size = 0
        self._ids_end = 0  # bytes appended to `ids`
        self._flushed = 0  # entries os.pread can see (the rest may sit in write buffers)

    def _use(self, layout: _Layout, slots: int) -> None:
        self._slots = array(layout.typecode)  # the old table goes before the new one comes
        self._slots = array(layout.typecode, [0]) * slots  # no same-size temporary
        self._mask = slots - 1
        self._layout = layout
        self._fp_shift, self._ref_bits, self._ref_mask = (
            layout.fp_shift,
            layout.ref_bits,
            layout.ref_mask,
        )

    def __len__(self) -> int:
        return self._size

    def __contains__(self, record_id: str) -> bool:
        return self._find(record_id, hash(record_id) & _MASK64)[1] is not None

    def setdefault(self, record_id: str, line: int) -> int:
        """The line `record_id` was first seen on; records `line` if it is new."""
        key = hash(record_id) & _MASK64
        slot, first = self._find(record_id, key)
        if first is not None:
            return first
        if self._size >= self._layout.max_entries:
            self._refill(_WIDE, len(self._slots))
            slot = self._find(record_id, key)[0]
        if self._records is None:
            self._records = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115
            self._ids = tempfile.TemporaryFile(dir=self._folder)  # noqa: SIM115
        data = record_id.encode("utf-8", "surrogatepass")
        self._records.write(_RECORD.pack(key, line, self._ids_end, len(data)))
        self._ids.write(data)  # type: ignore[union-attr]
        self._ids_end += len(data)
        self._size += 1
        self._slots[slot] = ((key >> self._fp_shift) << self._ref_bits) | self._size
        if self._size * 2 > self._mask:
            self._refill(self._layout, len(self._slots) * 2)
        return line

    def close(self) -> None:
        """Drop the files; the index is empty afterwards."""
        for f in (self._records, self._ids):
            if f is not None:
                f.close()
        self._records = self._ids = None
        self._reset()

    # --- internals -------------------------------------------------------------------
    def _find(self, record_id: str, key: int) -> tuple[int, int | None]:
        """(the slot holding `record_id`, or the empty slot ending its chain; the id's
        first line if it is there)."""
        slots, mask, shift = self._slots, self._mask, self._ref_bits
        fp = key >> self._fp_shift
        i = key & mask
        while (found := slots[i]) != 0:
            if found >> shift == fp:
                line = self._line_if(record_id, (found & self._ref_mask) - 1)
                if line is not None:
                    return i, line
            i = (i + 1) & mask
        return i, None

    def _line_if(self, record_id: str, entry: int) -> int | None:
        """The line of entry `entry` if its id is `record_id`."""
        assert self._records is not None and self._ids is not None
        self.verified += 1
        self._flush()
        _, line, offset, length = _RECORD.unpack(
            os.pread(self._records.fileno(), _RECORD.size, entry * _RECORD.size)
        )
        stored = os.pread(self._ids.fileno(), length, offset)
        return line if stored == record_id.encode("utf-8", "surrogatepass") else None

    def _flush(self) -> None:
        if self._flushed < self._size:
            assert self._records is not None and self._ids is not None
            self._records.flush()
            self._ids.flush()
            self._flushed = self._size

    def _refill(self, layout: _Layout, slots: int) -> None:
        """A table of `slots` slots in `layout`, refilled from the hashes on disk."""
        self._use(layout, slots)
        table, mask, shift = self._slots, self._mask, self._ref_bits
        fp_shift = layout.fp_shift
        for entry, key in enumerate(self._keys(), start=1):
            i = key & mask
            while table[i]:
                i = (i + 1) & mask
            table[i] = ((key >> fp_shift) << shift) | entry

    def _keys(self) -> Iterator[int]:
        """The hash of every entry, in entry order."""
        if self._records is None:
            return
        self._flush()
        fd, step = self._records.fileno(), _READ_RECORDS * _RECORD.size
        for offset in range(0, self._size * _RECORD.size, step):
            rows = array("Q")
            rows.frombytes(os.pread(fd, step, offset))
            if sys.byteorder == "big":
                rows.byteswap()  # records are little-endian
            yield from rows[0::4]
