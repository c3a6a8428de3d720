"""The access token: flag/env or a token file first, else the credentials file `authsvc` writes.

The file (`~/.gpt4api-sk.pub`, like the original) holds the console's JSON
answer: `{"access_token", "expired_at", "username"}`; it is written 0600.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import register_secret

DEFAULT_CREDENTIALS = Path("~/.gpt4api-sk.pub")


@dataclass(frozen=True)
class Credentials:
    access_token: str
    username: str | None
    expires_at: float | None  # unix time

    def __repr__(self) -> str:  # never show the token
        return f"Credentials(username={self.username!r}, expires_at={self.expires_at!r})"


def parse_expiry(value: Any) -> float | None:
    """`expired_at` as unix seconds: accepts seconds, milliseconds or an ISO-8601 string."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return float(value) / 1000 if value > 1e12 else float(value)
    text = str(value).strip()
    try:
        return parse_expiry(float(text))
    except ValueError:
        pass
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def read_credentials(path: Path) -> Credentials:
    path = path.expanduser()
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"no access token: give --access-token-file, set GPT4BATCH_ACCESS_TOKEN, "
            f"or run `gpt4batch auth` to create {path}"
        ) from None
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read credentials file {path}: {exc}") from None
    token = data.get("access_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise ConfigError(f"credentials file {path} has no access_token; run `gpt4batch auth`")
    register_secret(token)
    return Credentials(token, data.get("username"), parse_expiry(data.get("expired_at")))


def read_token_file(path: Path) -> str:
    """The token held by a file of its own (`--access-token-file`, e.g. a mounted secret)."""
    return read_secret_file(path, "--access-token-file")


def read_secret_file(path: Path, flag: str) -> str:
    """A secret held by a file of its own (stripped, registered for redaction); a
    ConfigError names `flag` and the file when it cannot be read or is empty."""
    path = path.expanduser()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{flag} {path}: cannot read it ({reason})") from None
    if not secret:
        raise ConfigError(f"{flag} {path} is empty")
    register_secret(secret)
    return secret


def resolve_token(
    explicit: str | None,
    credentials_file: Path,
    *,
    token_file: Path | None = None,
    now: float | None = None,
) -> str:
    """The token to use, or ConfigError saying how to get one (checked before any work)."""
    if explicit and token_file:
        raise ConfigError(
            "give either --access-token/GPT4BATCH_ACCESS_TOKEN or --access-token-file, not both"
        )
    if explicit:
        register_secret(explicit)
        return explicit
    if token_file:
        return read_token_file(token_file)
    creds = read_credentials(credentials_file)
    now = time.time() if now is None else now
    if creds.expires_at is not None and creds.expires_at <= now:
        when = datetime.fromtimestamp(creds.expires_at).isoformat(timespec="seconds")
        raise ConfigError(
            f"the access token in {credentials_file} expired at {when}; run `gpt4batch auth` again"
        )
    return creds.access_token


def write_credentials(path: Path, answer: dict[str, Any]) -> Path:
    """Store the console's answer atomically with mode 0600 (never world-readable)."""
    path = path.expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(answer, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    os.chmod(path, 0o600)
    return path


#: Flags whose value is a secret: other users of the host see argv (ps, /proc/<pid>/cmdline).
SECRET_FLAGS = {
    "--access-token": "--access-token-file or GPT4BATCH_ACCESS_TOKEN",
    "--nsq-auth-secret": "--nsq-auth-secret-file or GPT4BATCH_NSQ_AUTH_SECRET",
    "--api-key": "--api-key-file (lines 'name: key', mode 600) or GPT4BATCH_API_KEYS",
    "--webhook-secret": "--webhook-secret-file (mode 600) or GPT4BATCH_WEBHOOK_SECRET",
}


def warn_secrets_in_argv(prog: str, argv: Sequence[str]) -> None:
    """One line on stderr for each secret given on the command line (it still works)."""
    for flag, instead in SECRET_FLAGS.items():
        if any(arg.replace("_", "-").split("=", 1)[0] == flag for arg in argv):
            warn_secret_in_argv(prog, flag, instead)


def warn_secret_in_argv(prog: str, flag: str, instead: str) -> None:
    print(
        f"{prog}: warning: {flag} on the command line is visible to every user of "
        f"this host (ps); prefer {instead}",
        file=sys.stderr,
    )
