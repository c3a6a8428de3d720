"""Message authenticators: results cannot be forged by whoever can publish to nsqd.

The services share one secret (`--bus-secret-file` or `GPT4BATCH_BUS_SECRET`; never a
flag's value, never logged). A message on an authenticated topic (results, result parts,
download jobs, downloaded notices, dead letters) carries an HMAC-SHA256 of the topic and
its body, as the body's last JSON field, of fixed size::

    {"v":1,"batch":"b",...,"auth":"<64 hex digits>"}

so the body stays one JSON object any NSQ tool can read, models ignore the field, and a
consumer verifies the bytes it received with one HMAC over them (no re-serialising).
The MAC covers ``topic + "\\n" + body up to the suffix`` (the suffix is
``,"auth":"…"}``): a message signed for one topic does not verify on another.
Asks and batch manifests stay open by design: they are the documented way in.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from typing import Any

from gpt4batch.common.errors import ConfigError
from gpt4batch.common.logging import get_logger

log = get_logger("gpt4batch.bus")

#: Environment variable that holds the secret itself (the file is the other way).
SECRET_ENV = "GPT4BATCH_BUS_SECRET"

_HEAD = b',"auth":"'
_TAIL = b'"}'
_DIGITS = 64  # hex of a SHA-256 MAC
#: Bytes the authenticator adds to a body.
OVERHEAD = len(_HEAD) + _DIGITS + len(_TAIL) - 1  # the body's own "}" is reused
_SUFFIX = len(_HEAD) + _DIGITS + len(_TAIL)
#: Shortest secret accepted (bytes): a guessable secret would let anyone sign.
MIN_SECRET_BYTES = 16


class Authenticator:
    """Signs and verifies message bodies with one shared secret."""

    def __init__(self, secret: bytes) -> None:
        if len(secret) < MIN_SECRET_BYTES:
            raise ConfigError(
                f"the bus secret is {len(secret)} bytes; use at least {MIN_SECRET_BYTES} "
                "(e.g. `openssl rand -hex 32`)"
            )
        self._key = secret

    def __repr__(self) -> str:  # never the secret
        return "Authenticator(<secret>)"

    @classmethod
    def generate(cls) -> Authenticator:
        """A random secret of this process only (the single-process `run`)."""
        return cls(secrets.token_bytes(32))

    def _mac(self, topic: str, signed_part: bytes | memoryview) -> bytes:
        mac = hmac.new(self._key, topic.encode(), hashlib.sha256)
        mac.update(b"\n")
        mac.update(signed_part)
        return mac.hexdigest().encode()

    def sign(self, topic: str, body: bytes) -> bytes:
        """`body` (a JSON object) with its authenticator as the last field."""
        if not body.endswith(b"}"):
            raise ValueError("only a JSON object body can carry an authenticator")
        head = body[:-1]
        return head + _HEAD + self._mac(topic, head) + _TAIL

    def verify(self, topic: str, body: bytes) -> str | None:
        """None when `body` carries a valid authenticator for `topic`, else why not."""
        if len(body) <= _SUFFIX or not body.endswith(_TAIL):
            return "no authenticator"
        view = memoryview(body)
        end = len(body) - _SUFFIX
        if view[end : end + len(_HEAD)] != _HEAD:
            return "no authenticator"
        given = bytes(view[end + len(_HEAD) : -len(_TAIL)])
        if not hmac.compare_digest(given, self._mac(topic, view[:end])):
            return "authenticator does not verify"
        return None


class Refusals:
    """Counts the refused messages of one subscription (`counter`: its metric child) and
    warns at most once per `every` s: a flood of forgeries must not flood the log."""

    def __init__(self, counter: Any, topic: str, channel: str, every: float = 10.0) -> None:
        self.counter = counter
        self.topic = topic
        self.channel = channel
        self.every = every
        self._unlogged = 0
        self._logged_at = -every

    def add(self, why: str) -> None:
        self.counter.inc()
        self._unlogged += 1
        now = time.monotonic()
        if now - self._logged_at < self.every:
            return
        log.warning(
            "refused messages without a valid authenticator (another publisher, or a "
            "different --bus-secret-file)",
            topic=self.topic,
            channel=self.channel,
            refused=self._unlogged,
            last_reason=why,
        )
        self._unlogged = 0
        self._logged_at = now


def load_secret(secret_file: str | None) -> bytes | None:
    """The configured secret: the file's content (stripped) or `GPT4BATCH_BUS_SECRET`;
    None when neither is set. A file that cannot be read is a ConfigError naming it."""
    if secret_file:
        path = Path(secret_file)
        try:
            data = path.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"--bus-secret-file / GPT4BATCH_BUS_SECRET_FILE: cannot read {path}: "
                f"{exc.strerror or exc}"
            ) from None
        if not data:
            raise ConfigError(f"--bus-secret-file / GPT4BATCH_BUS_SECRET_FILE: {path} is empty")
        return data
    env = os.environ.get(SECRET_ENV, "").strip()
    return env.encode() if env else None


def from_config(secret_file: str | None, *, generate: bool = False) -> Authenticator:
    """The authenticator of the configured secret; without one, a per-process random one
    when `generate` (everything in one process), else a ConfigError saying how to set it."""
    secret = load_secret(secret_file)
    if secret is not None:
        return Authenticator(secret)
    if generate:
        return Authenticator.generate()
    raise ConfigError(
        "no bus secret: the services sign and verify results with a secret they share; "
        f"give --bus-secret-file (GPT4BATCH_BUS_SECRET_FILE) or {SECRET_ENV} "
        "(deploy/prepare.sh and `gpt4batch stack` make one)"
    )


def write_secret(path: Path) -> Path:
    """Create `path` with a new random secret (mode 0600) unless it exists; returns it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32) + "\n")
    return path
