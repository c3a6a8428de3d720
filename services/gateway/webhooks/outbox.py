"""The durable outbox: one file per undelivered event, `<data-dir>/webhooks/<batch-id>.json`.

A batch ends once, so it has at most one event: the file is named by the batch,
and writing an event for a batch that already has one replaces it. Each file is
written whole (temp file, fsync, rename, folder fsync) before the batch's new
status is stored, rewritten after a failed attempt (the attempts survive a
restart) and removed once the receiver answered 2xx or the attempts ran out.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from gpt4batch.common.logging import get_logger
from gpt4batch.services.sink.ledger.files import write_atomically

log = get_logger("gpt4batch.gateway")

_NAME = re.compile(r"batch_[0-9a-f]{24}\.json")


@dataclass
class Event:
    """One event and where its delivery stands."""

    id: str  # evt_…: the `webhook-id` of every attempt, so receivers can drop repeats
    type: str  # batch.completed, batch.failed, batch.expired, batch.cancelled
    created_at: int  # when the batch reached its status (unix seconds)
    batch: str
    attempts: int = 0  # failed so far
    next_at: float = 0.0  # unix time of the next attempt

    def body(self) -> bytes:
        """The POSTed JSON, the same bytes on every attempt."""
        event = {
            "id": self.id,
            "object": "event",
            "type": self.type,
            "created_at": self.created_at,
            "data": {"id": self.batch},
        }
        return json.dumps(event, separators=(",", ":")).encode()


class Outbox:
    """The event files of one folder (blocking calls: each writes one small file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def load(self) -> list[Event]:
        """Every event left undelivered; temp files of a cut write are removed."""
        if not self.folder.is_dir():
            return []
        events: list[Event] = []
        for path in sorted(self.folder.iterdir()):
            if path.name.startswith(".") and path.name.endswith(".tmp"):
                path.unlink(missing_ok=True)
                continue
            if not _NAME.fullmatch(path.name):
                continue
            try:
                events.append(Event(**json.loads(path.read_bytes())))
            except (OSError, ValueError, TypeError) as exc:
                log.warning("unreadable webhook event file left alone", file=str(path), error=exc)
        return events

    def save(self, event: Event) -> None:
        """Write `event` durably (replacing its batch's previous event, if any)."""
        write_atomically(self._path(event.batch), json.dumps(asdict(event)).encode())

    def remove(self, event: Event) -> None:
        self._path(event.batch).unlink(missing_ok=True)

    def _path(self, batch_id: str) -> Path:
        return self.folder / f"{batch_id}.json"
