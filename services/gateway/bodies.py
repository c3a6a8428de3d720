"""Request bodies in bounded memory: small JSON bodies up to a limit, and uploads
(multipart/form-data) parsed as they arrive, the file part written straight to disk.

Tornado hands a streaming handler the body in chunks of at most 64 KiB; nothing
here keeps more than one chunk plus a boundary, a part's headers (16 KiB at
most) and the small form fields (1 KiB each).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import BinaryIO

MAX_PART_HEADERS = 16 * 1024
MAX_FIELD = 1024
FILE_FIELD = "file"
_PARAM = re.compile(r';\s*(name|filename)\s*=\s*(?:"([^"]*)"|([^;\s]*))', re.IGNORECASE)


class BadBody(ValueError):
    """The body is not what the route takes; the message says why (no host detail)."""


class SmallBody:
    """A body collected in memory up to `limit` bytes."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            raise BadBody(f"The request body is over the {self.limit}-byte limit of this route.")
        self._chunks.append(chunk)

    def data(self) -> bytes:
        return b"".join(self._chunks)


def multipart_boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        raise BadBody("Send the file as multipart/form-data (fields 'file' and 'purpose').")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
            if 0 < len(boundary) <= 200:
                return boundary.encode("latin-1", "replace")
    raise BadBody("The multipart/form-data body has no usable boundary.")


class LineCounter:
    """Non-blank lines of a stream fed in chunks, counted up to `limit` + 1: past the limit
    the rest is not looked at (the file is refused whatever it holds)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.lines = 0
        self._open = False  # the line being fed has content

    @property
    def over(self) -> bool:
        return self.lines + self._open > self.limit

    def feed(self, data: bytes) -> None:
        if self.over:
            return
        parts = data.split(b"\n")
        for part in parts[:-1]:  # each ends a line
            if self._open or (part and not part.isspace()):
                self.lines += 1
            self._open = False
        last = parts[-1]
        self._open = self._open or bool(last and not last.isspace())


class MultipartUpload:
    """A multipart/form-data body fed chunk by chunk: the first `file` part goes to
    `path` (its non-blank lines counted up to `max_lines` + 1), other fields are kept when
    short, anything else is skipped."""

    def __init__(self, boundary: bytes, path: Path, max_lines: int) -> None:
        self.path = path
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_bytes = 0
        self.lines = LineCounter(max_lines)
        self._delimiter = b"\r\n--" + boundary
        self._buffer = bytearray(b"\r\n")  # so the first delimiter looks like the others
        self._state = "preamble"
        self._part: str | None = None  # "file", a field's name, or None (skipped)
        self._field = bytearray()
        self._file: BinaryIO | None = None

    @property
    def has_file(self) -> bool:
        return self.filename is not None

    def feed(self, chunk: bytes) -> None:
        self._buffer += chunk
        while self._step():
            pass

    def finish(self) -> None:
        """The body is over: it must have ended with the closing boundary."""
        if self._state != "done":
            raise BadBody("The multipart/form-data body ends before its closing boundary.")

    def close(self) -> None:
        """Flush and fsync the file (blocking: call it in a thread)."""
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def discard(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.path.unlink(missing_ok=True)

    # --- the state machine: each step consumes what it can, False when it needs more ---
    def _step(self) -> bool:
        buf = self._buffer
        if self._state in ("preamble", "data"):
            at = buf.find(self._delimiter)
            if at < 0:
                keep = len(self._delimiter) - 1  # a delimiter may straddle two chunks
                if len(buf) > keep:
                    self._content(bytes(buf[:-keep]))
                    del buf[:-keep]
                return False
            self._content(bytes(buf[:at]))
            self._end_part()
            del buf[: at + len(self._delimiter)]
            self._state = "delimiter"
            return True
        if self._state == "delimiter":
            if len(buf) < 2:
                return False
            if buf[:2] == b"--":
                self._state = "done"
                return True
            end = buf.find(b"\r\n")
            if end < 0:
                if len(buf) > 256:
                    raise BadBody("The multipart/form-data body is malformed.")
                return False
            del buf[: end + 2]
            self._state = "headers"
            return True
        if self._state == "headers":
            end = 0 if buf.startswith(b"\r\n") else buf.find(b"\r\n\r\n")
            if end < 0:
                if len(buf) > MAX_PART_HEADERS:
                    raise BadBody("A part of the multipart/form-data body has oversized headers.")
                return False
            self._start_part(bytes(buf[:end]).decode("utf-8", "replace"))
            del buf[: end + (2 if end == 0 else 4)]
            self._state = "data"
            return True
        buf.clear()  # done: the epilogue is ignored
        return False

    def _start_part(self, headers: str) -> None:
        disposition = ""
        for line in headers.split("\r\n"):
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-disposition":
                disposition = value
        params = {m[1].lower(): m[2] or m[3] for m in _PARAM.finditer(disposition)}
        field = params.get("name")
        if field == FILE_FIELD and self.filename is None:
            self.filename = _clean_filename(params.get("filename") or "upload.jsonl")
            self._file = self.path.open("wb")
            self._part = FILE_FIELD
        elif field and field != FILE_FIELD:
            self._part, self._field = field, bytearray()
        else:
            self._part = None

    def _content(self, data: bytes) -> None:
        if not data or self._state != "data" or self._part is None:
            return
        if self._part == FILE_FIELD:
            assert self._file is not None
            self._file.write(data)
            self.file_bytes += len(data)
            self.lines.feed(data)
            return
        self._field += data
        if len(self._field) > MAX_FIELD:
            raise BadBody(f"The form field {self._part[:64]!r} is over {MAX_FIELD} bytes.")

    def _end_part(self) -> None:
        if self._state == "data" and self._part not in (None, FILE_FIELD):
            self.fields.setdefault(str(self._part), self._field.decode("utf-8", "replace"))
        self._part = None


def _clean_filename(name: str) -> str:
    """The last path component, printable, at most 255 characters."""
    base = name.replace("\\", "/").rsplit("/", 1)[-1]
    base = "".join(c for c in base if c.isprintable()).strip() or "upload.jsonl"
    return base[:255]
