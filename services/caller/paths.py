"""Which local files an ask may make the caller upload.

An AskMessage can come from any system that can publish to the asks topic,
and the caller uploads whatever paths it names. `PathPolicy` keeps that to
the allowed folders (none unless configured: `run` allows its input's folder,
the caller service only what `--allowed-dirs` lists), after resolving
symlinks, and never lets the credentials file or a system folder out.

The check on the path says early and clearly why an ask is refused; the upload
itself opens the file through `open_for_upload`, which checks the *opened*
file again (its real location, and its device and inode against the
credentials file's: a hard link to the token inside an allowed folder has
another path but the same inode), so a path swapped after the first check
gains nothing.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from gpt4batch.common.errors import FinalError, IErrCode
from gpt4batch.common.messages import AskMessage
from gpt4batch.common.upstreams.base import LocalFile, open_local

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
        try:
            identity = _identity(os.stat(resolved))
        except OSError:
            identity = None  # missing: the upload says so (590)
        return self._refusal(resolved, identity)

    def open_for_upload(self, path: str, limit: int) -> LocalFile:
        """Open `path` and check the open file (not the name again): FinalError 591 when
        it is not one this policy lets out (`open_local` checks type and size)."""
        fh = open_local(path, limit)
        try:
            reason = self._refusal(_opened_path(fh.fd, path), _identity(os.fstat(fh.fd)))
            if reason is not None:
                raise FinalError(FORBIDDEN_PATH, f"{fh.name} {reason}")
        except BaseException:
            fh.close()
            raise
        return fh

    def _refusal(self, resolved: Path, identity: tuple[int, int] | None) -> str | None:
        if resolved in self.secret_files or (
            identity is not None and identity in self._secret_identities()
        ):
            return "is the credentials file (or a link to it); refusing to upload it"
        if any(resolved.is_relative_to(d) for d in SYSTEM_DIRS):
            return "is in a system folder; refusing to upload it"
        if not self.allowed_dirs:
            return "cannot be uploaded: no folder is allowed (set --allowed-dirs)"
        if not any(resolved.is_relative_to(root) for root in self.allowed_dirs):
            return "is outside the allowed folders (--allowed-dirs)"
        return None

    def _secret_identities(self) -> set[tuple[int, int]]:
        """(device, inode) of each secret file now (`gpt4batch auth` replaces the file)."""
        found = set()
        for secret in self.secret_files:
            with contextlib.suppress(OSError):
                found.add(_identity(os.stat(secret)))
        return found


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _opened_path(fd: int, path: str) -> Path:
    """Where the open file really is (Linux: /proc/self/fd), else the path resolved."""
    try:
        return Path(os.readlink(f"/proc/self/fd/{fd}"))
    except OSError:
        return Path(path).resolve()
