"""Downloader handler against a local HTTP server, publishing to a recording MemoryBus."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from gpt4batch.common.bus import Retries
from gpt4batch.common.errors import Requeue
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import DownloadJob, DownloadResult
from gpt4batch.common.retry import RetryPolicy, parse_retry_after
from gpt4batch.common.topics import Topics
from gpt4batch.services.downloader.downloader import Downloader
from gpt4batch.services.downloader.fetch import where
from tests.downloader.fileserver import FileServer, serve_files

PAYLOAD = bytes(range(256)) * 300  # 76,800 bytes


class Attempt:
    id = "0000000000000001"

    def __init__(self, attempts: int = 1) -> None:
        self.attempts = attempts

    def touch(self) -> None:
        pass


def run(coro: Awaitable[Any]) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture(scope="module")
def shared_server() -> Iterator[FileServer]:
    with serve_files({"a.bin": PAYLOAD, "b.txt": b"hello"}) as srv:
        yield srv


@pytest.fixture
def server(shared_server: FileServer) -> FileServer:
    shared_server.hits.clear()
    shared_server.headers.clear()
    return shared_server


def job(url: str, local: str) -> DownloadJob:
    return DownloadJob(batch="b1", record_id="r1", ask_id="a1", url=url, local=local)


async def handle(
    folder: Path, msg: DownloadJob, delivered: int = 1, **kw: Any
) -> tuple[list[DownloadResult], BaseException | None]:
    """Run one delivery; returns what was published and what the handler raised."""
    bus = MemoryBus(topics=Topics("t"), record=True)
    async with httpx.AsyncClient(follow_redirects=True) as client:
        downloader = Downloader(folder, client=client, bus=bus, **kw)
        raised: BaseException | None = None
        try:
            await downloader.handle(msg, Attempt(delivered))
        except Requeue as exc:
            raised = exc
    bodies = bus.published.get(bus.topics.downloaded, [])
    return [DownloadResult.model_validate_json(b) for b in bodies], raised


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_download_writes_the_served_bytes(tmp_path: Path, server: FileServer) -> None:
    url = f"{server.url}/f/a.bin?sig=secret&se=2030"
    results, raised = run(handle(tmp_path, job(url, "GPT4API_r1_a1_0_a.bin")))
    assert raised is None
    assert (tmp_path / "GPT4API_r1_a1_0_a.bin").read_bytes() == PAYLOAD
    assert listing(tmp_path) == ["GPT4API_r1_a1_0_a.bin"]  # no temp file left
    [res] = results
    assert res.ok and res.size == len(PAYLOAD)
    assert res.sha256 == hashlib.sha256(PAYLOAD).hexdigest()
    assert "authorization" not in server.headers[0]


@pytest.mark.parametrize("name", ["../x", "a/b", "..", ".", "x\x00y", "a\\b", "", ".hidden"])
def test_hostile_names_are_refused(tmp_path: Path, server: FileServer, name: str) -> None:
    folder = tmp_path / "downloads"
    folder.mkdir()
    results, raised = run(handle(folder, job(f"{server.url}/f/b.txt", name)))
    assert raised is None
    [res] = results
    assert not res.ok and "unsafe" in (res.error or "")
    assert listing(folder) == []
    assert listing(tmp_path) == ["downloads"]
    assert sum(server.hits.values()) == 0


def test_existing_file_is_skipped_without_a_request(tmp_path: Path, server: FileServer) -> None:
    (tmp_path / "b.txt").write_bytes(b"hello")
    results, _ = run(handle(tmp_path, job(f"{server.url}/f/b.txt", "b.txt")))
    assert sum(server.hits.values()) == 0
    [res] = results
    assert res.ok and res.size == 5 and res.sha256 == hashlib.sha256(b"hello").hexdigest()


@pytest.mark.parametrize("path", ["/big-declared", "/big-streamed"])
def test_oversize_is_refused_without_partial_file(
    tmp_path: Path, server: FileServer, path: str
) -> None:
    results, raised = run(handle(tmp_path, job(server.url + path, "big.bin"), max_bytes=5000))
    assert raised is None
    [res] = results
    assert not res.ok and "too large" in (res.error or "")
    assert listing(tmp_path) == []


def test_503_is_requeued_with_its_retry_after(tmp_path: Path, server: FileServer) -> None:
    msg = job(f"{server.url}/503", "x.bin")
    results, raised = run(handle(tmp_path, msg, delivered=1))
    assert results == []
    assert isinstance(raised, Requeue) and raised.bounded
    assert raised.delay is None and raised.retry_after == 1.0  # a floor under the backoff


def test_503_is_given_up_after_the_subscriptions_attempts(
    tmp_path: Path, server: FileServer
) -> None:
    """The retry policy is the subscription's (declared as the service does): three
    deliveries 1 s apart (Retry-After), then the failed result, and the message finished."""

    async def scenario() -> tuple[list[DownloadResult], list[bytes]]:
        bus = MemoryBus(topics=Topics("t"), record=True)
        async with httpx.AsyncClient() as client:
            downloader = Downloader(tmp_path, client=client, bus=bus)
            quick = RetryPolicy(base_delay=0.01, max_delay=0.01)
            retries = Retries(max_attempts=3, backoff=quick, give_up=downloader.failed)
            topic = bus.topics.downloads
            bus.subscribe(topic, "downloader", DownloadJob, downloader.handle, retries=retries)
            await bus.start()
            await bus.publish(topic, job(f"{server.url}/503", "x.bin"))
            # Until the result is out and the job finished (not requeued again): the
            # scenario's 30 s bound fails the test otherwise.
            while not bus.published.get(bus.topics.downloaded) or await bus.backlog(
                topic, "downloader"
            ):
                await asyncio.sleep(0.05)
            await bus.stop(1)
        results = bus.published[bus.topics.downloaded]
        return [DownloadResult.model_validate_json(b) for b in results], bus.published.get(
            bus.topics.dead, []
        )

    [res], dead = run(scenario())
    assert not res.ok and res.error == "gave up after 3 attempts: HTTP 503"
    assert server.hits["/503"] == 3
    assert dead == []  # given up by the subscription's give_up, not dead-lettered
    assert listing(tmp_path) == []


def test_404_is_final_at_once(tmp_path: Path, server: FileServer) -> None:
    results, raised = run(handle(tmp_path, job(f"{server.url}/missing", "m.bin")))
    assert raised is None
    [res] = results
    assert not res.ok and res.error == "HTTP 404"
    assert server.hits["/missing"] == 1


def test_connection_refused_is_transient(tmp_path: Path) -> None:
    _, raised = run(handle(tmp_path, job("http://127.0.0.1:1/x", "x.bin")))
    assert isinstance(raised, Requeue)
    assert listing(tmp_path) == []


def test_logged_location_drops_the_signature() -> None:
    assert (
        where("https://cdn.example:8443/p/f.png?sig=abc&se=1") == "https://cdn.example:8443/p/f.png"
    )


@pytest.mark.parametrize(
    ("header", "expected"), [("3", 3.0), (None, None), ("soon", None), ("-4", 0.0)]
)
def test_retry_after_parsing(header: str | None, expected: float | None) -> None:
    assert parse_retry_after(header) == expected


def test_a_killed_downloads_temp_files_are_swept_but_live_ones_stay(tmp_path: Path) -> None:
    """Orphan `.part` files (their writer died: no flock) go at start; held or fresh ones stay."""
    import fcntl
    import os

    from gpt4batch.services.downloader.fetch import sweep_orphan_parts

    sub = tmp_path / "batch"
    sub.mkdir()
    orphan = sub / ".a.png.part-0123456789ab"
    live = tmp_path / ".b.png.part-ba9876543210"
    fresh = tmp_path / ".c.png.part-aaaaaaaaaaaa"
    for path in (orphan, live, fresh):
        path.write_bytes(b"half a picture")
    for path in (orphan, live):
        os.utime(path, (1, 1))  # old enough to judge
    keeper = os.open(live, os.O_WRONLY)
    fcntl.flock(keeper, fcntl.LOCK_EX)  # a download still writing it
    try:
        assert sweep_orphan_parts(tmp_path) == 1
    finally:
        os.close(keeper)
    assert not orphan.exists()
    assert live.exists() and fresh.exists()
    assert sweep_orphan_parts(tmp_path) == 1  # the lock is gone now: an orphan too
    assert not live.exists() and fresh.exists()
