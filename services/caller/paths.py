"""Which local files an ask may make the caller upload.

An AskMessage can come from any system that can publish to the asks topic,
and the caller uploads whatever paths it names. `PathPolicy` keeps that to
the allowed folders and never lets the credentials file out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.common.messages import AskMessage

#: iErr code of an ask naming a file it may not upload.
FORBIDDEN_PATH = 403


@dataclass(frozen=True)
class PathPolicy:
    allowed_dirs: tuple[Path, ...] = ()
    secret_files: tuple[Path, ...] = field(default=())

    @classmethod
    def build(cls, allowed: list[str], secret_files: list[Path]) -> PathPolicy:
        return cls(
            tuple(Path(d).expanduser().resolve() for d in allowed),
            tuple(p.expanduser().resolve() for p in secret_files),
        )

    def refusal(self, msg: AskMessage) -> str | None:
        """Why this message may not run (naming the ask and path), or None."""
        for ask in msg.record.asks:
            for path in [*ask.image_paths(), *ask.files]:
                full = Path(path if os.path.isabs(path) else os.path.join(msg.base_dir or "", path))
                resolved = full.expanduser().resolve()
                if resolved in self.secret_files:
                    return f"ask {ask.id}: {path} is the credentials file; refusing to upload it"
                if self.allowed_dirs and not any(
                    resolved.is_relative_to(root) for root in self.allowed_dirs
                ):
                    return f"ask {ask.id}: {path} is outside the allowed folders (--allowed-dirs)"
        return None
