"""Large, realistic Batch API input files, written line by line, and a process's memory.

Each line is a chat request with a system prompt and a user message padded
with support-ticket prose to about `line_bytes`, the shape of real batch
files (bench/gateway_batch.py's 50,000 x 4 KB = ~200 MB, the API's limits;
tests/gateway/test_scale.py's bounded version).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

SYSTEM = "You are a support agent. Answer in two sentences."
_TICKET = (
    "the customer reports that their order arrived late and the package was damaged "
    "in transit so they would like a refund or a replacement shipped by express "
    "delivery before the end of the month because the item is a gift and they have "
    "already contacted the courier twice without any answer about the missing parcel "
    "which was marked as delivered although nobody was home at that time"
)
_SPREAD = 8192  # lines start at different offsets of the prose


def _prose(size: int) -> str:
    """`size` characters of deterministic prose to slice messages from."""
    words = _TICKET.split(" ")
    out, n, i = [], 0, 0
    while n < size:
        word = words[(i * 7 + i // len(words)) % len(words)]
        out.append(word)
        n += len(word) + 1
        i += 1
    return " ".join(out)[:size]


class Conversations:
    """The i-th request, as a Batch API line of ~`line_bytes` (short when 0) or as the same
    conversation in gpt4batch's record format."""

    def __init__(self, line_bytes: int = 0) -> None:
        self.line_bytes = line_bytes
        self.pool = _prose(line_bytes + _SPREAD) if line_bytes else ""

    def _text(self, i: int, room: int) -> str:
        head = f"Ticket {i}: "
        if room <= len(head):
            return f"q{i}.0"
        start = (i * 131) % _SPREAD
        return head + self.pool[start : start + room - len(head)]

    def _line(self, i: int, text: str) -> str:
        messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
        body = {"model": "gpt-4o-mini", "messages": messages}
        line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
        return json.dumps({**line, "body": body}, separators=(",", ":"))

    def batch_line(self, i: int) -> str:
        room = self.line_bytes - len(self._line(i, "")) - 1
        return self._line(i, self._text(i, room))

    def record_line(self, i: int) -> str:
        """The same conversation as a gpt4batch record (the system prompt folded in)."""
        text = json.loads(self.batch_line(i))["body"]["messages"][-1]["content"]
        ask = {"id": "a0", "content": f"{SYSTEM}\n\n{text}"}
        return json.dumps({"id": f"r{i}", "asks": [ask]}, separators=(",", ":"))


def write_lines(path: Path, n: int, line: Callable[[int], str], start: int = 0) -> Path:
    """Lines `line(start)` … `line(start + n - 1)` to `path`, one at a time."""
    with path.open("w", encoding="utf-8") as fh:
        for i in range(start, start + n):
            fh.write(line(i) + "\n")
    return path


def status_mb(pid: int, field: str) -> float:
    """A memory figure of /proc/<pid>/status (VmRSS, VmHWM: peak resident) in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def reset_peak(pid: int) -> None:
    """Start VmHWM over from the current resident size (Linux clear_refs 5)."""
    Path(f"/proc/{pid}/clear_refs").write_text("5")
