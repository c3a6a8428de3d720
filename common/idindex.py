"""A compact map from record id to the number of the line it first appeared on.

Duplicate detection must remember every id of an input: a `dict[str, int]`
costs about 113 MB per million ids. This keeps a 64-bit hash of each id and
its line number (below 2^32) in two flat arrays (open addressing, at most
half full): 24–48 bytes of array per id, ~36 MB at the peak of growing to a
million ids. Two different ids share a 64-bit hash with odds of about
one in 10^7 for a 10-million-line input, so a reported duplicate names the
line of the first one for the user to check.
"""

from __future__ import annotations

from array import array

_MASK64 = (1 << 64) - 1


class IdIndex:
    """`setdefault(id, line)` → the line the id was first seen on."""

    __slots__ = ("_keys", "_lines", "_mask", "_size")

    def __init__(self, capacity: int = 1024) -> None:
        slots = 1 << max(4, (capacity * 2 - 1).bit_length())
        self._keys = array("Q", bytes(8 * slots))
        self._lines = array("I", bytes(4 * slots))
        self._mask = slots - 1
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, record_id: str) -> bool:
        keys, mask, key = self._keys, self._mask, _key(record_id)
        i = key & mask
        while (found := keys[i]) != 0:
            if found == key:
                return True
            i = (i + 1) & mask
        return False

    def setdefault(self, record_id: str, line: int) -> int:
        """The line `record_id` was first seen on; records `line` if it is new."""
        keys, mask, key = self._keys, self._mask, _key(record_id)
        i = key & mask
        while (found := keys[i]) != 0:
            if found == key:
                return self._lines[i]
            i = (i + 1) & mask
        keys[i] = key
        self._lines[i] = line
        self._size += 1
        if self._size * 2 > mask:
            self._grow()
        return line

    def _grow(self) -> None:
        old_keys, old_lines = self._keys, self._lines
        slots = (self._mask + 1) * 2
        self._keys = keys = array("Q", bytes(8 * slots))
        self._lines = lines = array("I", bytes(4 * slots))
        self._mask = mask = slots - 1
        for key, line in zip(old_keys, old_lines, strict=True):
            if key:
                i = key & mask
                while keys[i]:
                    i = (i + 1) & mask
                keys[i] = key
                lines[i] = line


def _key(record_id: str) -> int:
    """A non-zero 64-bit hash of the id (0 marks an empty slot)."""
    return (hash(record_id) & _MASK64) or 1
