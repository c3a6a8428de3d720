"""A response body decoded step by step and capped *after* decompression.

httpx decompresses each network chunk whole: 64 KB of a gzip bomb become 64 MB
in one `bytes` before any size check can run (a 200 KB bomb lifted the
downloader to 315 MB). `BoundedBody` takes the raw (still encoded) chunks,
inflates at most `step` bytes at a time and raises `BodyTooLarge` as soon as
the decoded size passes the limit, so memory stays near one step.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator

#: Decoded bytes produced per decompression step.
STEP = 64 * 1024

#: The encodings we ask for (Accept-Encoding) and decode; anything else is refused.
ACCEPT_ENCODING = "gzip, deflate"


class BodyTooLarge(Exception):
    """The decoded body passed its limit; nothing past the limit was inflated."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"over {limit} bytes after decompression")
        self.limit = limit


class UnsupportedEncoding(Exception):
    """A Content-Encoding we did not ask for (br, zstd, stacked encodings …)."""


class BoundedBody:
    """Feed raw chunks in, get decoded pieces of at most `step` bytes out."""

    def __init__(self, content_encoding: str | None, limit: int, *, step: int = STEP) -> None:
        codings = [c.strip().lower() for c in (content_encoding or "").split(",") if c.strip()]
        codings = [c for c in codings if c != "identity"]
        if len(codings) > 1 or (codings and codings[0] not in ("gzip", "x-gzip", "deflate")):
            raise UnsupportedEncoding(f"unsupported Content-Encoding {content_encoding!r}")
        self.limit = limit
        self.step = step
        self.size = 0
        self._deflate = codings == ["deflate"]
        self._started = False
        self._inflater: zlib._Decompress | None = None
        if codings:
            # gzip: header auto-detected (gzip or zlib); deflate: zlib-wrapped, else raw.
            self._inflater = zlib.decompressobj(zlib.MAX_WBITS if self._deflate else 47)

    def _count(self, piece: bytes) -> bytes:
        self.size += len(piece)
        if self.size > self.limit:
            raise BodyTooLarge(self.limit)
        return piece

    def feed(self, data: bytes) -> Iterator[bytes]:
        """The decoded pieces of one raw chunk; BodyTooLarge once past the limit,
        zlib.error when the data is not what its encoding says."""
        inflater = self._inflater
        if inflater is None:
            yield self._count(data)
            return
        try:
            piece = inflater.decompress(data, self.step)
        except zlib.error:
            if not self._deflate or self._started:
                raise
            # "deflate" sent raw (no zlib header), as some servers do.
            inflater = self._inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            piece = inflater.decompress(data, self.step)
        self._started = True
        yield self._count(piece)
        while inflater.unconsumed_tail:
            yield self._count(inflater.decompress(inflater.unconsumed_tail, self.step))

    def flush(self) -> Iterator[bytes]:
        """What the decoder still holds at the end of the body."""
        if self._inflater is not None:
            rest = self._inflater.flush()
            if rest:
                yield self._count(rest)
