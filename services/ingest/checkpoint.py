"""Which seqs of a batch ingest already published (acknowledged by nsqd), kept on disk.

A re-run of ingest for the same batch and the same input skips them, so a
killed ingest that is started again does not publish (and the callers do not
pay for) what is already on the bus or done. The sink's ledger cannot answer
this: an ask still queued in nsqd has no result yet. Lost messages (nsqd
killed) are `gpt4batch reconcile`'s job, from the ledger.

One file per (batch, input sha256): `<state dir>/<batch>-<sha[:12]>.published`.
Its first line, `# cluster {json}`, says which cluster it belongs to (the nsqd
and the batch's trace there, see `resume.py`); then, fsynced as they happen,
`?first-last` before a chunk is sent (written ahead) and `first-last` once nsqd
acknowledged it. A torn last line is ignored. Seqs sent but not acknowledged
when ingest was killed may be on nsqd or not: a re-run publishes them again
marked `republished`, and a caller that answered one finishes it without a call.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from gpt4batch.common.filenames import safe_component
from gpt4batch.common.logging import get_logger
from gpt4batch.common.seqset import SeqSet

log = get_logger("gpt4batch.ingest")

CLUSTER_LINE = b"# cluster "


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "gpt4batch" / "ingest"


def ranges(seqs: list[int]) -> list[tuple[int, int]]:
    """Sorted seqs as (first, last) runs of consecutive numbers."""
    out: list[tuple[int, int]] = []
    for seq in sorted(seqs):
        if out and seq == out[-1][1] + 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return out


class PublishedSeqs:
    """The published-seq index of one (batch, input)."""

    def __init__(self, state_dir: Path, batch: str, input_sha256: str) -> None:
        tag = hashlib.sha1(batch.encode()).hexdigest()[:8]
        name = f"{safe_component(batch, 'batch')[:80]}-{tag}-{input_sha256[:12]}.published"
        self.path = state_dir / name
        self.seqs = SeqSet()
        self.sent = SeqSet()
        """Seqs written ahead as being sent (acknowledged or not)."""
        self.cluster: dict[str, Any] | None = None
        """What the `# cluster` line recorded; None in an index written before it existed."""

    def load(self) -> int:
        """Read the index (blocking); returns how many seqs it holds."""
        if not self.path.exists():
            return 0
        for line in self.path.read_bytes().splitlines(keepends=True):
            if line.startswith(CLUSTER_LINE) and line.endswith(b"\n"):
                with contextlib.suppress(ValueError):
                    self.cluster = json.loads(line[len(CLUSTER_LINE) :])
                continue
            into = self.seqs
            if line.startswith(b"?"):
                into, line = self.sent, line[1:]
            first, sep, last = line.strip().partition(b"-")
            if not line.endswith(b"\n") or not sep or not first.isdigit() or not last.isdigit():
                continue
            for seq in range(int(first), int(last) + 1):
                into.add(seq)
        return self.seqs.count

    def unacknowledged(self, seq: int) -> bool:
        """Sent by an earlier run and not acknowledged: nsqd may hold it or not."""
        return seq in self.sent and seq not in self.seqs

    def sending(self, seqs: list[int]) -> None:
        """Write ahead that a chunk with these seqs is being sent, fsynced (blocking)."""
        self._append(seqs, b"?")

    def record(self, seqs: list[int]) -> None:
        """Append the seqs of one acknowledged chunk, fsynced (blocking)."""
        self._append(seqs)
        for seq in seqs:
            self.seqs.add(seq)

    def _append(self, seqs: list[int], mark: bytes = b"") -> None:
        if not seqs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = b"".join(mark + b"%d-%d\n" % run for run in ranges(seqs))
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)

    def begin(self, cluster: dict[str, Any]) -> None:
        """Start the index afresh for `cluster`, replacing an earlier one (blocking)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        temporary = self.path.with_name(self.path.name + ".new")
        with temporary.open("wb") as fh:
            fh.write(CLUSTER_LINE + json.dumps(cluster, sort_keys=True).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temporary, self.path)
        self.seqs = SeqSet()
        self.sent = SeqSet()
        self.cluster = cluster
