"""Who is calling: API keys, the tenant each one names, and the owner id of what it makes.

A key comes from `--api-key-file` (lines `name: key`, or a bare `key` named
`key-N`), `GPT4BATCH_API_KEYS` or `--api-key` (which puts the key in argv,
visible to every user of the host: a warning says so, common/credentials.py's as for
every secret flag). Logs and metrics name the tenant, never the key. Files and
batches are stored with the tenant's *owner id*, a one-way digest of its key, so
renaming a tenant in the key file keeps its files, and the database holds no key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from gpt4batch.common.logging import get_logger, register_secret

log = get_logger("gpt4batch.gateway")

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}")


@dataclass(frozen=True)
class Tenant:
    name: str  # what logs and metrics show
    owner: str  # what the store keeps: a digest of the key


def owner_of(key: str) -> str:
    return hashlib.sha256(b"gpt4batch-gateway-owner\0" + key.encode()).hexdigest()[:32]


def read_key_file(path: str) -> list[tuple[str | None, str]]:
    """(name or None, key) per line of a key file; `#` starts a comment. Raises ValueError
    naming the line (never the key) when a line is not `name: key` or `key`."""
    file = Path(path).expanduser()
    try:
        text = file.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read the API key file {path}: {exc.strerror}") from None
    found: list[tuple[str | None, str]] = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, key = (part.strip() for part in line.partition(":"))
        if not sep:
            name, key = "", name
        if (sep and not NAME.fullmatch(name)) or not key or any(c.isspace() for c in key):
            raise ValueError(
                f"{path} line {number}: expected 'name: key' (name: letters, digits, "
                "'_.@-', at most 64) or a bare key"
            )
        found.append((name or None, key))
    return found


class Tenants:
    """The configured keys; `find` is the one place a presented key is checked."""

    def __init__(self, keys: Iterable[tuple[str | None, str]]) -> None:
        self._by_key: list[tuple[bytes, Tenant]] = []
        names: set[str] = set()
        for number, (name, key) in enumerate(keys, 1):
            if any(hmac.compare_digest(key.encode(), k) for k, _ in self._by_key):
                continue  # the same key given twice (file and environment): one tenant
            name = name or f"key-{number}"
            if name in names:
                raise ValueError(f"two API keys are named {name!r}")
            names.add(name)
            register_secret(key)  # masked should it ever reach a log line
            self._by_key.append((key.encode(), Tenant(name, owner_of(key))))
        if not self._by_key:
            raise ValueError("no API key")

    @property
    def names(self) -> list[str]:
        return [t.name for _, t in self._by_key]

    def find(self, authorization: str) -> Tenant | None:
        """The tenant of an `Authorization: Bearer <key>` header, or None. Every key is
        compared in constant time, so the time taken does not tell which one was close."""
        scheme, _, given = authorization.partition(" ")
        presented = given.strip().encode()
        if scheme.lower() != "bearer" or not presented:
            return None
        found = None
        for key, tenant in self._by_key:
            if hmac.compare_digest(presented, key):
                found = tenant
        return found


def warn_if_shared(path: str, what: str = "the API key file") -> None:
    """A warning when other users may read the key file (or another secret's file)."""
    try:
        mode = Path(path).expanduser().stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(f"{what} can be read by other users: chmod 600 it", file=path)
