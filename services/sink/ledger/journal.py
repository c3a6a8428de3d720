"""The journal's line format: its header and one entry per result, written and parsed.

    {"ledger":2,"batch":"…","started":1764700000.0}
    {"seq":12,"ok":true,"files":["…png"],"usage":{…},"record":{…}}

An entry is parsed without decoding its record (kept as the exact bytes written);
`usage` is one flat object, so its end is its first closing brace.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from gpt4batch.common.messages import UsageLine

LEDGER_VERSION = 2
_ENTRY = re.compile(rb'^\{"seq":(\d+),"ok":(true|false),"files":')
_DECODER = json.JSONDecoder()
_USAGE = b',"usage":'
_RECORD = b',"record":'


def header_line(batch: str, started: float) -> str:
    """The journal's first line: its format version, batch and the wall time of its
    first message (the manifest-less age bound counts from it)."""
    return json.dumps({"ledger": LEDGER_VERSION, "batch": batch, "started": started}) + "\n"


def is_header_of(header: dict[str, Any], batch: str) -> bool:
    """Whether a parsed first line is this format's header for `batch`."""
    return header.get("ledger") == LEDGER_VERSION and header.get("batch") == batch


def usage_entry(usage: UsageLine) -> bytes:
    """A result's usage as the journal keeps it: its known fields only, one flat object
    (`parse_entry` finds its end at the first closing brace)."""
    entry = (
        b'{"prompt_tokens":%d,"completion_tokens":%d,"total_tokens":%d,"estimated":%s,"cost_usd":%s'
        % (
            usage.prompt_tokens,
            usage.completion_tokens,
            usage.total_tokens,
            b"true" if usage.estimated else b"false",
            json.dumps(usage.cost_usd).encode(),
        )
    )
    details = usage.model_extra or {}
    for name in ("cached_tokens", "reasoning_tokens"):  # reported by some upstreams only
        count = details.get(name)
        if isinstance(count, int) and not isinstance(count, bool) and count > 0:
            entry += b',"%s":%d' % (name.encode(), count)
    return entry + b"}"


def entry_line(
    seq: int,
    ok: bool,
    record_json: str | bytes,
    files: list[str] = (),  # type: ignore[assignment]
    usage: bytes | None = None,
) -> bytes:
    """One journal entry; `usage` (a flat JSON object) is what the result's calls cost."""
    record = record_json.encode() if isinstance(record_json, str) else record_json
    names = json.dumps(list(files), separators=(",", ":")).encode() if files else b"[]"
    paid = b',"usage":' + usage if usage else b""
    return b'{"seq":%d,"ok":%s,"files":%s%s,"record":%s}\n' % (
        seq,
        b"true" if ok else b"false",
        names,
        paid,
        record,
    )


@dataclass(frozen=True)
class Entry:
    seq: int
    ok: bool
    files: list[str]
    record: bytes
    """The output record's JSON, exactly as written."""
    usage: dict[str, Any] | None = None
    """What the result's calls used and cost (None: no call was made for it)."""


def parse_entry(line: bytes) -> Entry | None:
    """A journal entry; None for the header or a line that is not one."""
    match = _ENTRY.match(line)
    if match is None:
        return None
    pos = match.end()
    files: Any = []
    if line.startswith(b"[]", pos):  # most entries: no file names to decode
        pos += 2
    else:
        text = line.decode("utf-8", "surrogateescape")
        try:
            files, end = _DECODER.raw_decode(text, pos)
        except ValueError:
            return None
        if not isinstance(files, list):
            return None
        pos = len(text[:end].encode("utf-8", "surrogateescape"))
    usage = None
    if line.startswith(_USAGE, pos):  # a flat object: it ends at its first brace
        close = line.find(b"}", pos)
        try:
            usage = json.loads(line[pos + len(_USAGE) : close + 1])
        except ValueError:
            return None
        pos = close + 1
    if not line.startswith(_RECORD, pos):
        return None
    stop = line.rstrip().rfind(b"}")
    return Entry(
        int(match.group(1)),
        match.group(2) == b"true",
        files,
        line[pos + len(_RECORD) : stop],
        usage,
    )
