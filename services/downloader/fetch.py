"""Stream one URL into a file: temp file in the same folder, limits, fsync, rename.

A complete file only ever appears by `os.replace`, so "the file exists" means
"the download finished" and a job can be skipped on redelivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import secrets
import time
import zlib
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from gpt4batch.common.bounded_body import BodyTooLarge, BoundedBody, UnsupportedEncoding
from gpt4batch.common.retry import is_retryable_status, parse_retry_after
from gpt4batch.services.downloader.guard import DownloadRefused

CHUNK = 64 * 1024


class DownloadFailed(Exception):
    """A download did not complete; `transient` says whether retrying may help."""

    def __init__(self, reason: str, *, transient: bool, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient
        self.retry_after = retry_after


def where(url: str) -> str:
    """`url` without its query (signed URLs carry their signature there): safe to log."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def file_digest(path: Path) -> tuple[int, str]:
    """Size and sha256 of a file (blocking)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return size, digest.hexdigest()


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


#: Temp files being written are named `.<name>.part-<random>` beside their target.
PART_GLOB = ".*.part-*"


def sweep_orphan_parts(folder: Path, min_age: float = 2.0) -> int:
    """Remove temp files that no live download holds (a killed downloader's leftovers).

    A download holds an exclusive flock on its temp file while writing; the kernel
    drops it when the writer dies, so a file whose lock can be taken is an orphan.
    Files younger than `min_age` seconds are left (a writer may not have locked yet).
    """
    removed = 0
    now = time.time()
    for part in folder.rglob(PART_GLOB):
        try:
            if not part.is_file() or now - part.stat().st_mtime < min_age:
                continue
            fd = os.open(part, os.O_RDONLY | os.O_NONBLOCK)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a live download is writing it
        else:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
                removed += 1
        finally:
            os.close(fd)
    return removed


def _finish(fd: int, tmp: Path, target: Path) -> None:
    """Blocking tail of a download: fsync, close, rename into place, fsync the folder."""
    os.fsync(fd)
    os.close(fd)
    os.replace(tmp, target)
    _fsync_dir(target.parent)


async def fetch_to(
    client: httpx.AsyncClient, url: str, target: Path, *, max_bytes: int, timeout: float
) -> tuple[int, str]:
    """Download `url` to `target`; returns (size, sha256) or raises DownloadFailed.

    Nothing is left behind on failure: the temp file is removed.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        raise DownloadFailed(f"unsupported URL scheme in {where(url)!r}", transient=False)
    tmp = target.with_name(f".{target.name}.part-{secrets.token_hex(6)}")
    fd: int | None = None
    try:
        async with asyncio.timeout(timeout), client.stream("GET", url) as resp:
            _check_status(resp)
            declared = resp.headers.get("content-length")
            if declared and declared.isdigit() and int(declared) > max_bytes:
                raise DownloadFailed(
                    f"too large: Content-Length {declared} > {max_bytes} bytes", transient=False
                )
            # Raw bytes, inflated here step by step: the limit holds after decompression.
            body = BoundedBody(resp.headers.get("content-encoding"), max_bytes)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held until closed: not an orphan
            digest = hashlib.sha256()
            async for raw in resp.aiter_raw(CHUNK):
                for piece in body.feed(raw):
                    _write(fd, piece, digest)
            for piece in body.flush():
                _write(fd, piece, digest)
            size = body.size
        done_fd, fd = fd, None
        await asyncio.to_thread(_finish, done_fd, tmp, target)
        return size, digest.hexdigest()
    except DownloadRefused as exc:
        raise DownloadFailed(str(exc), transient=False) from None
    except BodyTooLarge:
        raise DownloadFailed(f"too large: over {max_bytes} bytes", transient=False) from None
    except UnsupportedEncoding as exc:
        raise DownloadFailed(str(exc), transient=False) from None
    except zlib.error:
        raise DownloadFailed(
            "the body is not what its Content-Encoding says", transient=False
        ) from None
    except TimeoutError:
        raise DownloadFailed(f"timed out after {timeout:g}s", transient=True) from None
    except httpx.TimeoutException as exc:
        raise DownloadFailed(f"timeout: {type(exc).__name__}", transient=True) from None
    except (httpx.UnsupportedProtocol, httpx.InvalidURL, httpx.TooManyRedirects) as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}", transient=False) from None
    except httpx.TransportError as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}", transient=True) from None
    except httpx.HTTPError as exc:
        raise DownloadFailed(f"{type(exc).__name__}: {exc}", transient=False) from None
    finally:
        if fd is not None:
            os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def _write(fd: int, piece: bytes, digest: hashlib._Hash) -> None:
    digest.update(piece)
    view = memoryview(piece)
    while view:
        view = view[os.write(fd, view) :]


def _check_status(resp: httpx.Response) -> None:
    status = resp.status_code
    if 200 <= status < 300:
        return
    transient = is_retryable_status(status)
    raise DownloadFailed(
        f"HTTP {status}",
        transient=transient,
        retry_after=parse_retry_after(resp.headers.get("retry-after")) if transient else None,
    )
