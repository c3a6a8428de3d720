"""`SeqSet`: which seqs of a batch have an entry, as a growable bitmap (the sink's ledger
and ingest's checkpoint both keep one)."""

from __future__ import annotations

from collections.abc import Iterator


class SeqSet:
    """A growable bitmap of seqs (1 bit per record: 125 KB per million)."""

    def __init__(self) -> None:
        self._bits = bytearray()
        self.count = 0

    def __contains__(self, seq: int) -> bool:
        byte = seq >> 3
        return byte < len(self._bits) and bool(self._bits[byte] & (1 << (seq & 7)))

    def add(self, seq: int) -> bool:
        """Mark `seq`; False if it was already there."""
        byte = seq >> 3
        if byte >= len(self._bits):
            self._bits.extend(bytes(max(byte + 1 - len(self._bits), len(self._bits))))
        mask = 1 << (seq & 7)
        if self._bits[byte] & mask:
            return False
        self._bits[byte] |= mask
        self.count += 1
        return True

    def discard(self, seq: int) -> None:
        if seq in self:
            self._bits[seq >> 3] &= ~(1 << (seq & 7)) & 0xFF
            self.count -= 1

    def has_all_below(self, total: int) -> bool:
        """Every seq in 0..total-1 is marked (whole bytes compared at once)."""
        full, rest = divmod(total, 8)
        bits = self._bits
        if len(bits) < full + (1 if rest else 0):
            return False
        if bits[:full].count(0xFF) != full:
            return False
        return not rest or bits[full] & ((1 << rest) - 1) == (1 << rest) - 1

    def missing_below(self, total: int) -> Iterator[int]:
        for seq in range(total):
            if seq not in self:
                yield seq
