"""Checks `gpt4batch run` makes before any work: a user's mistake is one line and exit 2.

Each check raises ConfigError naming the flag and the path, so a run never
pays for a batch and then fails to write its output.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from gpt4batch.common.errors import ConfigError
from gpt4batch.services.ingest.reader import STDIN


def check_input(path: str, flag: str = "-i/--in") -> None:
    if path == STDIN:
        return
    p = Path(path)
    if p.is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; give a JSONL file")
    if not p.exists():
        hint = " (the default input)" if path == "example.jsonl" else ""
        raise ConfigError(f"{flag}: no such input file: {path}{hint}")
    if not p.is_file():
        raise ConfigError(f"{flag}: {path} is not a regular file")
    if not os.access(p, os.R_OK):
        raise ConfigError(f"{flag}: cannot read {path} (permission denied)")


def _existing_ancestor(path: Path) -> Path:
    for candidate in [path, *path.parents]:
        if candidate.exists():
            return candidate
    return Path("/")


def check_folder(folder: Path, flag: str, what: str) -> None:
    """`folder` is (or can be made) a folder we can create files in; made if missing."""
    ancestor = _existing_ancestor(folder)
    if not ancestor.is_dir():
        raise ConfigError(f"{flag}: {what} is under {ancestor}, which is a file, not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".gpt4batch-probe-")
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ConfigError(f"{flag}: cannot create files in {folder} ({reason})") from None


def check_output(path: str, flag: str = "-o/--out") -> None:
    """The output is a file we can write atomically (temp file + rename in its folder)."""
    p = Path(path)
    if path.endswith(("/", os.sep)) or p.is_dir():
        raise ConfigError(f"{flag}: {path} is a directory; give a file name (e.g. out.jsonl)")
    if p.exists() and not p.is_file():
        raise ConfigError(f"{flag}: {path} exists and is not a regular file")
    check_folder(p.parent if str(p.parent) else Path("."), flag, path)


def check_download_dir(path: Path, flag: str = "-d/--download-dir") -> None:
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{flag}: {path} is a file, not a folder")
    check_folder(path, flag, str(path))


async def connect_failure(host: str, port: int, timeout: float) -> str | None:
    """Why a TCP connection to host:port fails (refused, unresolvable, timed out), or None."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except TimeoutError:
        return f"timed out after {timeout:g} s"
    except socket.gaierror:
        return f"cannot resolve the host {host}"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return None


async def check_reachable(addresses: list[str], flag: str, timeout: float = 3.0) -> None:
    """Each host:port accepts a TCP connection (nsqd, nsqlookupd), else one line."""
    for address in addresses:
        host, _, port = address.rpartition(":")
        reason = (
            await connect_failure(host, int(port), timeout)
            if port.isdigit()
            else f"no port in {address!r}"
        )
        if reason is not None:
            raise ConfigError(f"{flag}: cannot reach {address} ({reason}); is it running?")


async def check_upstream(urls: dict[str, str], timeout: float = 5.0) -> None:
    """The upstream answers at each URL (flag -> URL), before a record is touched: a dead
    or mistyped host is one line naming the URL, not a failure of every record."""
    seen = set()
    for flag, url in urls.items():
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        if (parts.hostname, port) in seen or not parts.hostname:
            continue
        seen.add((parts.hostname, port))
        reason = await connect_failure(parts.hostname, port, timeout)
        if reason is not None:
            raise ConfigError(
                f"{flag}: the upstream at {url} does not answer ({reason}); check the URL "
                "and that the service is up"
            )


def check_allowed_dirs(paths: list[str], flag: str = "--allowed-dirs") -> None:
    """Each folder asks may upload from exists (a typo would refuse every file in it)."""
    for path in paths:
        p = Path(path).expanduser()
        if not p.is_dir():
            what = "is not a folder" if p.exists() else "does not exist"
            raise ConfigError(f"{flag}: {path} {what}")
