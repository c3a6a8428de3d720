"""Which local files an ask may make the caller upload.

An AskMessage can come from any system that can publish to the asks topic,
and the caller uploads whatever paths it names. `PathPolicy` keeps that to
the allowed folders (none unless configured: `run` allows its input's folder,
the caller service only what `--allowed-dirs` lists), after resolving
symlinks, and never lets the credentials file or a system folder out.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.common.errors import IErrCode
from gpt4batch.common.messages import AskMessage

#: iErr code of an ask naming a file it may not upload.
FORBIDDEN_PATH = IErrCode.FORBIDDEN_PATH

#: Never uploaded, whatever the allowed folders: the kernel's and devices' views
#: (/proc/self/environ holds the caller's environment, token included).
SYSTEM_DIRS = tuple(Path(p) for p in ("/proc", "/sys", "/dev"))


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
                reason = self.path_refusal(path, msg.base_dir)
                if reason is not None:
                    return f"ask {ask.id}: {path} {reason}"
        return None

    def path_refusal(self, path: str, base_dir: str | None) -> str | None:
        full = path if os.path.isabs(path) else os.path.join(base_dir or "", path)
        resolved = Path(full).expanduser().resolve()  # symlinks followed before the check
        if resolved in self.secret_files:
            return "is the credentials file; refusing to upload it"
        if any(resolved.is_relative_to(d) for d in SYSTEM_DIRS):
            return "is in a system folder; refusing to upload it"
        if not self.allowed_dirs:
            return "cannot be uploaded: no folder is allowed (set --allowed-dirs)"
        if not any(resolved.is_relative_to(root) for root in self.allowed_dirs):
            return "is outside the allowed folders (--allowed-dirs)"
        return None
