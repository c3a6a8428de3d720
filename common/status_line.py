"""The one line a progress bar redraws in place, and log lines that go above it.

On a terminal `run` draws its bar with `\\r`; a log line written meanwhile would
land in the middle of it. Log output goes through `AboveStatusLine`: while a
status line is shown, each log line first clears it, and redraws it after.
"""

from __future__ import annotations

import threading
from typing import TextIO

_CLEAR = "\r\x1b[K"

_lock = threading.RLock()
_current: StatusLine | None = None


class StatusLine:
    """A line redrawn in place at the bottom of `stream` until `finish()`."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.text = ""

    def show(self, text: str) -> None:
        global _current
        with _lock:
            _current = self
            self.text = text
            self.stream.write(_CLEAR + text)
            self.stream.flush()

    def finish(self) -> None:
        """End the line where it is; later log lines go below it."""
        global _current
        with _lock:
            if self.text:
                self.stream.write("\n")
                self.stream.flush()
            self.text = ""
            if _current is self:
                _current = None


class AboveStatusLine:
    """A text stream (the log's) whose lines go above the status line being shown."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._at_line_start = True

    def write(self, text: str) -> int:
        with _lock:
            status = _current if _current is not None and _current.stream is self.stream else None
            if status is not None and status.text and self._at_line_start:
                self.stream.write(_CLEAR)
            self.stream.write(text)
            self._at_line_start = text.endswith("\n")
            if status is not None and status.text and self._at_line_start:
                self.stream.write(status.text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.stream, "isatty", lambda: False)())
