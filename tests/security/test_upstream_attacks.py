"""Attacks through the upstream's answers and the files on the host, replayed against
running processes over the session's real nsqd (issue 18, "Upstream answers").

- SSRF: download jobs naming nsqd's own /stats (loopback by address and by name,
  IPv6 loopback, a 302 from an allowed server to it) and the cloud metadata address;
  the only allowance is the test server's own host:port, given explicitly.
- Gzip bombs: a 200 KB body inflating to 200 MB at the downloader, a 150 KB chat
  answer inflating to 150 MB at the caller; the process's peak RSS must stay near
  where it started (a memory bound, not a timing).
- A hard link to the credentials file inside an allowed folder, named by an ask.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import DownloadJob, DownloadResult
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.settings import BaseServiceSettings
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, wait_channel
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

MB = 1024 * 1024

#: How far a process's peak RSS may rise above where it stood before the attack.
#: Before the fixes: the downloader rose by ~250 MB, the caller by ~600 MB.
RSS_HEADROOM = 60 * MB


def gzip_of(prefix: bytes, filler: bytes, size: int, suffix: bytes = b"") -> bytes:
    """gzip of `prefix + filler * n + suffix` (`size` bytes of filler), built in pieces."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(prefix)]
    piece = filler * (MB // len(filler))
    for _ in range(size // MB):
        out.append(packer.compress(piece))
    out += [packer.compress(suffix), packer.flush()]
    return b"".join(out)


@dataclass
class Hostile:
    """What the attacker's server serves and saw."""

    url: str = ""
    bomb: bytes = b""
    answer_bomb: bytes = b""
    stream_bomb: bytes = b""
    hits: list[str] = field(default_factory=list)


@contextmanager
def hostile_server(hostile: Hostile) -> Iterator[Hostile]:
    """GET /f/ok (a file), /redirect?to=URL (302), /bomb (gzip bomb); POST: a bomb answer
    (an SSE stream when asked for one)."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def _send(self, status: int, body: bytes, **headers: str) -> None:
            self.send_response(status)
            for name, value in {"Content-Length": str(len(body)), **headers}.items():
                self.send_header(name.replace("_", "-"), value)
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            hostile.hits.append(self.path)
            if self.path == "/f/ok":
                self._send(200, b"fine")
            elif self.path.startswith("/redirect?to="):
                self._send(302, b"", Location=self.path.split("=", 1)[1])
            elif self.path == "/bomb":
                self._send(200, hostile.bomb, Content_Encoding="gzip")
            else:
                self._send(404, b"")

        def do_POST(self) -> None:
            hostile.hits.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if "text/event-stream" in (self.headers.get("Accept") or ""):
                body, kind = hostile.stream_bomb, "text/event-stream"
            else:
                body, kind = hostile.answer_bomb, "application/json"
            self._send(200, body, Content_Encoding="gzip", Content_Type=kind)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hostile.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield hostile
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def hostile() -> Iterator[Hostile]:
    attacker = Hostile(
        bomb=gzip_of(b"", b"\0", 200 * MB),
        answer_bomb=gzip_of(b'{"message_id": "m1", "junk": "', b"a", 150 * MB, b'"}'),
        stream_bomb=gzip_of(
            b'data: {"choices": [{"delta": {"content": "',
            b"a",
            150 * MB,
            b'"}}]}\n\ndata: [DONE]\n\n',
        ),
    )
    with hostile_server(attacker) as running:
        yield running


def rss(pid: int) -> tuple[int, int]:
    """(current, peak) resident set size of a process, in bytes (Linux /proc)."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) * 1024
    return fields["VmRSS"], fields["VmHWM"]


def allow_downloads_from(procs: ServiceProcs, url: str) -> None:
    """The explicit allowance of the test server (its host:port only) for the processes
    started after this (the environment variable; `--allow-download-host` is the flag)."""
    procs.env["GPT4BATCH_ALLOW_DOWNLOAD_HOST"] = url.split("://", 1)[1]


def download_results(
    nsqd: Nsqd, topic_prefix: str, jobs: list[DownloadJob]
) -> dict[str, DownloadResult]:
    """Publish `jobs` to the running downloader and collect its DownloadResults."""
    got: dict[str, DownloadResult] = {}

    async def scenario() -> None:
        settings = BaseServiceSettings(
            nsqd_tcp_address=[nsqd.tcp_address], topic_prefix=topic_prefix
        )
        bus = NsqBus(settings, service="attacker")

        async def on_result(msg: DownloadResult, delivery: Delivery) -> None:
            got[msg.local] = msg

        bus.subscribe(bus.topics.downloaded, "attacker", DownloadResult, on_result)
        await bus.start()
        await wait_channel(nsqd, bus.topics.downloaded, "attacker")
        await wait_channel(nsqd, bus.topics.downloads, "downloader")
        await bus.publish_many(bus.topics.downloads, jobs)
        deadline = time.monotonic() + 90
        while len(got) < len(jobs):
            assert time.monotonic() < deadline, f"only {sorted(got)} of {len(jobs)} arrived"
            await asyncio.sleep(0.05)
        await bus.stop(grace=1)

    asyncio.run(scenario())
    return got


def job(url: str, local: str) -> DownloadJob:
    return DownloadJob(batch="b1", record_id="r1", ask_id="a1", url=url, local=local)


def test_downloader_refuses_loopback_private_and_metadata_urls_and_redirects_to_them(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, hostile: Hostile, tmp_path: Path
) -> None:
    folder = tmp_path / "downloads"
    allow_downloads_from(procs, hostile.url)
    procs.start("downloader", "downloader", "--download-dir", str(folder))
    stats = f"http://{nsqd.http_address}/stats"
    attacks = {
        "loopback": stats,
        "by-name": f"http://localhost:{nsqd.http_port}/stats",
        "ipv6-loopback": f"http://[::1]:{nsqd.http_port}/stats",
        "mapped-ipv6": f"http://[::ffff:127.0.0.1]:{nsqd.http_port}/stats",
        "redirect": f"{hostile.url}/redirect?to={stats}",
        "metadata": "http://169.254.169.254/latest/meta-data/",
        "private": "http://10.255.255.1:4151/stats",
    }
    jobs = [job(url, name) for name, url in attacks.items()]
    jobs.append(job(f"{hostile.url}/f/ok", "allowed"))
    got = download_results(nsqd, topic_prefix, jobs)

    succeeded = {name for name in attacks if got[name].ok or (folder / name).exists()}
    assert succeeded == set(), f"SSRF got through: {succeeded}"
    for name in attacks:
        assert "refused" in (got[name].error or ""), (name, got[name].error)
        assert "--allow-download-host" in (got[name].error or "")
    assert got["allowed"].ok and (folder / "allowed").read_bytes() == b"fine"
    assert "/redirect?to=" + stats in hostile.hits  # the hop was followed, then refused


def test_downloader_memory_stays_flat_on_a_gzip_bomb(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, hostile: Hostile, tmp_path: Path
) -> None:
    folder = tmp_path / "downloads"
    allow_downloads_from(procs, hostile.url)
    proc = procs.start("downloader", "downloader", "--download-dir", str(folder))
    before, _ = rss(proc.pid)
    got = download_results(nsqd, topic_prefix, [job(f"{hostile.url}/bomb", "bomb.bin")])
    _, peak = rss(proc.pid)
    print(f"downloader RSS before {before / MB:.0f} MB, peak {peak / MB:.0f} MB")
    assert not got["bomb.bin"].ok and "too large" in (got["bomb.bin"].error or "")
    assert not (folder / "bomb.bin").exists()
    assert peak - before < RSS_HEADROOM, f"RSS {before / MB:.0f} -> {peak / MB:.0f} MB"


@pytest.mark.parametrize(
    "upstream",
    [["--upstream", "gpt4api"], ["--upstream", "openai", "--stream"]],
    ids=["json-answer", "sse-stream"],
)
def test_caller_memory_stays_flat_on_a_gzip_bomb_answer(
    procs: ServiceProcs, hostile: Hostile, tmp_path: Path, upstream: list[str]
) -> None:
    procs.env["GPT4BATCH_ACCESS_TOKEN"] = "sk-attack-test"
    out = tmp_path / "out" / "bomb.jsonl"
    out.parent.mkdir()
    procs.start("sink", "sink", "-o", str(out))
    caller = procs.start(
        "caller", "caller", "--base-url", hostile.url, *upstream,
        "--qps", "0", "--limit-scope", "process", "--retries", "0",
    )  # fmt: skip
    before, _ = rss(caller.pid)
    source = tmp_path / "in.jsonl"
    source.write_text(json.dumps({"id": "r1", "asks": [{"id": "a", "content": "hi"}]}) + "\n")
    procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "bomb")
    wait_for(out.with_name("bomb.done").exists, 90, "the batch to complete", procs.assert_alive)
    _, peak = rss(caller.pid)
    print(f"caller RSS before {before / MB:.0f} MB, peak {peak / MB:.0f} MB")
    assert peak - before < RSS_HEADROOM, f"RSS {before / MB:.0f} -> {peak / MB:.0f} MB"
    (record,) = read_jsonl(out)
    assert record["iErr"]["code"] == 596 and "answer over" in record["iErr"]["message"]


def test_a_hard_link_to_the_credentials_file_is_not_uploaded(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with MockUpstream(token="sk-hardlink-secret") as sim:
        credentials = tmp_path / "home" / ".gpt4api-sk.pub"
        credentials.parent.mkdir()
        credentials.write_text(json.dumps({"access_token": sim.token}))
        os.link(credentials, inbox / "notes.txt")  # same inode, inside the allowed folder
        (inbox / "real.txt").write_text("an ordinary file")
        out = tmp_path / "out" / "links.jsonl"
        out.parent.mkdir()
        procs.start("sink", "sink", "-o", str(out))
        procs.start(
            "caller", "caller", "--base-url", sim.url, "--credentials", str(credentials),
            "--allowed-dirs", str(inbox), "--qps", "0", "--limit-scope", "process",
        )  # fmt: skip
        lines = [
            {"id": "steal", "asks": [{"id": "a", "content": "read", "files": ["notes.txt"]}]},
            {"id": "plain", "asks": [{"id": "a", "content": "read", "files": ["real.txt"]}]},
        ]
        source = inbox / "in.jsonl"
        source.write_text("".join(json.dumps(line) + "\n" for line in lines))
        procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "links")
        wait_for(
            out.with_name("links.done").exists, 90, "the batch to complete", procs.assert_alive
        )
        uploads = sim.stats()["calls"].get("uploaded", 0)
    records = {r["id"]: r for r in read_jsonl(out)}
    assert records["steal"]["iErr"]["code"] == 591, records["steal"]
    assert "credentials file" in records["steal"]["iErr"]["message"]
    assert records["plain"]["iErr"] is None  # uploads as such still work
    assert uploads == 1  # the ordinary file only: the token never reached the upstream


def run_gpt4batch(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "GPT4BATCH_ACCESS_TOKEN"}
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip


def test_a_token_in_argv_is_warned_about_and_a_token_file_is_the_quiet_way(
    tmp_path: Path,
) -> None:
    (tmp_path / "in.jsonl").write_text(
        json.dumps({"id": "r", "asks": [{"id": "a", "content": "c"}]}) + "\n"
    )
    with MockUpstream(token="sk-argv-secret") as sim:
        (tmp_path / "token").write_text(sim.token + "\n")
        common = ["run", "-i", "in.jsonl", "--base-url", sim.url, "--progress", "off"]
        quiet = run_gpt4batch(tmp_path, *common, "-o", "a.jsonl", "--access-token-file", "token")
        loud = run_gpt4batch(tmp_path, *common, "-o", "b.jsonl", "--access-token", sim.token)
        caller = run_gpt4batch(
            tmp_path, "caller", "--access-token", sim.token, "--base-url", "gopher://h",
            "--nsqd-tcp-address", "127.0.0.1:1",
        )  # fmt: skip
    assert quiet.returncode == 0 and loud.returncode == 0, quiet.stderr + loud.stderr
    assert read_jsonl(tmp_path / "a.jsonl")[0]["iErr"] is None  # the file's token was used
    assert "warning" not in quiet.stderr
    for result in (loud, caller):
        warnings = [
            line for line in result.stderr.splitlines() if "warning: --access-token" in line
        ]
        assert len(warnings) == 1 and "--access-token-file" in warnings[0], result.stderr
        assert sim.token not in result.stderr + result.stdout
