"""Safe local names for files the upstream names, and output-file paths.

The upstream chooses download file names (in the escaped `rscd` query
parameter); they are untrusted. A local name is one path component of
`[A-Za-z0-9._-]`, never `.`/`..`, never hidden, at most 200 bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import unicodedata
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME = 200


def file_mode() -> int:
    """The mode of every file gpt4batch writes (output, side files, downloads): what the
    umask leaves of 0666, like `cp` or a shell redirect. `umask 077` makes them private."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


class UnsafeName(ValueError):
    """A name that would leave the download folder."""


def safe_component(text: str, fallback: str = "file") -> str:
    """`text` reduced to one harmless path component."""
    text = unicodedata.normalize("NFKC", text)
    text = text.replace("\\", "/").rsplit("/", 1)[-1]  # drop any path
    text = "".join(ch for ch in text if unicodedata.category(ch)[0] != "C")
    text = _UNSAFE.sub("_", text).strip("._-")
    text = re.sub(r"\.{2,}", ".", text)
    return text[:MAX_NAME] or fallback


def filename_from_url(url: str) -> str:
    """The file name the upstream announced (`rscd=attachment; filename=…`), else the path's."""
    query = parse_qs(urlsplit(url).query)
    for disposition in query.get("rscd", []):
        for part in unquote(disposition).split(";"):
            key, _, value = part.strip().partition("=")
            if key.lower() in ("filename", "filename*") and value:
                value = value.strip().strip('"')
                if value.lower().startswith("utf-8''"):
                    value = unquote(value[7:])
                return value
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def download_name(prefix: str, batch: str, record_id: str, ask_id: str, n: int, url: str) -> str:
    """`{prefix}_{record}_{ask}_{n}_{key}_{file name}`: deterministic and unique.

    Cleaning makes different ids look alike (`x/r6` and `y/r6` both become
    `r6`), so `key`, a short hash of the raw (batch, record, ask, n, url), keeps
    the name unique per file; a redelivered job gets the same name again, while
    a conversation run twice (a killed caller) names its other files apart, so
    they never overwrite the files of the result the output keeps.
    """
    raw = "\0".join((batch, record_id, ask_id, str(n), url)).encode()
    key = hashlib.sha256(raw).hexdigest()[:10]
    head = "_".join(
        [
            safe_component(prefix, "GPT4API")[:40],
            safe_component(record_id, "record")[:50],
            safe_component(ask_id, "ask")[:30],
            str(n),
            key,
        ]
    )
    return f"{head}_{safe_component(filename_from_url(url), 'file')}"[:MAX_NAME]


def inside(folder: Path, name: str) -> Path:
    """`folder/name`, refusing any name that is not one safe component inside `folder`."""
    if not name or name != safe_component(name, fallback="") or name in (".", ".."):
        raise UnsafeName(f"refusing unsafe local file name {name!r}")
    root = folder.resolve()
    target = (root / name).resolve()
    if target.parent != root:
        raise UnsafeName(f"refusing {name!r}: it resolves outside {root}")
    return target


def sibling(out: Path, suffix: str) -> Path:
    """`out.jsonl` → `out.<suffix>` (rejects, downloads, done…) beside the output file."""
    stem = out.name[: -len(".jsonl")] if out.name.endswith(".jsonl") else out.name
    return out.with_name(f"{stem}.{suffix}")
