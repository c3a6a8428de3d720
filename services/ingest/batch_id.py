"""Default batch ids: the same file gives the same batch, so a re-run lands in it again."""

from __future__ import annotations

import hashlib
import re
import uuid
from pathlib import Path

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def safe_stem(path: Path) -> str:
    stem = _UNSAFE.sub("_", path.stem).strip("._-")
    return stem[:64] or "input"


def default_batch_id(path: Path | None) -> str:
    """`<stem>-<8 hex of sha1(abs path, size, mtime)>`; random for stdin (no identity)."""
    if path is None:
        return f"stdin-{uuid.uuid4().hex[:8]}"
    resolved = path.resolve()
    st = resolved.stat()
    key = f"{resolved}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return f"{safe_stem(resolved)}-{hashlib.sha1(key).hexdigest()[:8]}"
