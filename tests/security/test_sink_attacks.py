"""Attacks on the sink through the NSQ topics, replayed against a real nsqd and a real
sink process (issue 18: "Orphan result parts", "Bounded per unknown batch").

Anyone who can publish to nsqd reaches the sink: these publish with nsqd's HTTP API
(`/pub`, `/mpub`), as another system (or an attacker) on the host would.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from gpt4batch.common.messages import ResultMessage, ResultPart
from gpt4batch.common.result_parts import split_result
from gpt4batch.common.topics import Topics
from gpt4batch.services.sink.ledger import read_ledger
from tests.sink.helpers import manifest, result
from tests.support.nsq_servers import Nsqd, Nsqlookupd, free_port, stop_pid, wait_channel, wait_http
from tests.support.pipeline import nsq_flags
from tests.support.signing import signed


def http_post(nsqd: Nsqd, path: str, body: bytes = b"") -> None:
    request = urllib.request.Request(f"http://{nsqd.http_address}{path}", data=body, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200, response.read()


def watch_dead_letters(nsqd: Nsqd, topics: Topics) -> None:
    """A channel `inspect` on the dead-letter topic, to count what lands there."""
    http_post(nsqd, f"/topic/create?topic={topics.dead}")
    http_post(nsqd, f"/channel/create?topic={topics.dead}&channel=inspect")


def mpub(nsqd: Nsqd, topic: str, bodies: list[bytes]) -> None:
    """Publish like another system would: nsqd's HTTP API, one body per line.

    Signed with the services' secret: the sink's bounds hold even against a publisher
    that has it (a buggy or compromised service of ours); one without it is refused
    before any of this (tests/security/test_nsq_attacks.py).
    """
    bodies = [signed(topic, body) for body in bodies]
    for start in range(0, len(bodies), 100):
        http_post(nsqd, f"/mpub?topic={topic}", b"\n".join(bodies[start : start + 100]))


def wait_until(
    predicate: Callable[[], bool], timeout: float, what: str, sink: subprocess.Popen[bytes]
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert sink.poll() is None, f"the sink exited with {sink.returncode} while waiting: {what}"
        assert time.monotonic() < deadline, f"timed out after {timeout:g} s waiting: {what}"
        time.sleep(0.1)


class RunningSink:
    def __init__(self, proc: subprocess.Popen[bytes], out_dir: Path, metrics_port: int) -> None:
        self.proc = proc
        self.out_dir = out_dir
        self.metrics_port = metrics_port

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    def metrics(self) -> str:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()


@pytest.fixture
def start_sink(
    tmp_path: Path, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str
) -> Iterator[Callable[..., RunningSink]]:
    """`python -m gpt4batch.services.sink --out-dir …` on the session's nsqd."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str, env: dict[str, str] | None = None, max_fds: int | None = None
    ) -> RunningSink:
        out_dir = tmp_path / "outbox"
        port = free_port()
        cmd = [
            sys.executable, "-m", "gpt4batch.services.sink",
            *nsq_flags(nsqd, nsqlookupd, topic_prefix),
            "--log-format", "json", "--metrics-port", str(port), "--metrics-host", "127.0.0.1",
            "--out-dir", str(out_dir), *args,
        ]  # fmt: skip

        def limit_fds() -> None:
            if max_fds is not None:  # a small container's descriptor limit
                import resource

                resource.setrlimit(resource.RLIMIT_NOFILE, (max_fds, max_fds))

        log = (tmp_path / "sink.log").open("ab")
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            preexec_fn=limit_fds,
        )
        started.append(proc)
        wait_http(f"http://127.0.0.1:{port}/metrics", timeout=30, proc=proc)
        topics = Topics(topic_prefix)
        for topic in (topics.results, topics.result_parts, topics.batches, topics.dead):
            asyncio.run(wait_channel(nsqd, topic, "sink", timeout=30))
        return RunningSink(proc, out_dir, port)

    yield start
    for proc in started:
        stop_pid(proc, timeout=20)


def orphan_piece(n: int) -> bytes:
    """Piece 0 of 2 of a result whose other piece never comes."""
    return (
        ResultPart(
            batch="junk-parts",
            seq=n,
            record_id=f"o{n}",
            group=f"orphan{n}",
            index=0,
            count=2,
            sha256=hashlib.sha256(f"orphan{n}".encode()).hexdigest(),
            data=base64.b64encode(b"{}").decode(),
        )
        .model_dump_json()
        .encode()
    )


def large_result_pieces(batch: str, seq: int) -> list[bytes]:
    msg: ResultMessage = result(f"big{seq}", batch=batch, seq=seq)
    msg.record.asks[0].content = "x" * 3000
    body = msg.model_dump_json().encode()
    pieces = split_result(msg, body, limit=1024 + 4 * len(msg.record.id) + 1500)
    assert len(pieces) >= 2
    return [p.model_dump_json().encode() for p in pieces]


def test_orphan_result_parts_end_dead_and_never_block_real_parts(
    start_sink: Callable[..., RunningSink], nsqd: Nsqd, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    watch_dead_letters(nsqd, topics)
    # A piece waits 2 s for its siblings (before the fix: 120 s, and forever requeued)
    sink = start_sink(
        "--max-in-flight", "16", "--max-attempts", "3",
        env={"GPT4BATCH_PART_WAIT_SECONDS": "2"},
    )  # fmt: skip
    # When 60 orphan pieces (more than the sink's 16 in-flight slots) come first
    mpub(nsqd, topics.result_parts, [orphan_piece(n) for n in range(60)])
    # and then a real result split in pieces, and its batch's manifest
    mpub(nsqd, topics.result_parts, large_result_pieces("real", 0))
    http_post(nsqd, f"/pub?topic={topics.batches}", manifest(1, "real").model_dump_json().encode())
    # Then the real result is written and its batch completes, orphans or not
    done = sink.out_dir / "real.done"
    wait_until(done.exists, 90, "the real batch completes (orphans held every slot)", sink.proc)
    assert read_ledger(sink.out_dir / "real.jsonl").counts.ok == 1
    # And every orphan piece ends in the dead-letter topic after bounded attempts
    wait_until(
        lambda: nsqd.depth(topics.dead, "inspect") >= 60,
        120,
        "60 orphan pieces dead-lettered",
        sink.proc,
    )
    assert nsqd.depth(topics.result_parts, "sink") == 0


def output_ids(path: Path) -> list[str]:
    if not path.exists():
        return []
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


def junk_results(n: int = 300) -> list[bytes]:
    return [body(result("junk", f"junk-{k}", 0)) for k in range(n)]


def test_results_of_made_up_batches_are_bounded_and_a_real_batch_completes(
    start_sink: Callable[..., RunningSink], nsqd: Nsqd, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    watch_dead_letters(nsqd, topics)
    # Given a sink under a small container's descriptor limit
    sink = start_sink("--max-attempts", "2", max_fds=256)
    # When 300 results with made-up batch ids arrive
    mpub(nsqd, topics.results, junk_results())
    # and then a real batch
    real = [body(result(f"r{s}", "real", s)) for s in range(5)]
    http_post(nsqd, f"/pub?topic={topics.batches}", manifest(5, "real").model_dump_json().encode())
    mpub(nsqd, topics.results, real)
    # Then the real batch completes
    wait_until((sink.out_dir / "real.done").exists, 90, "the real batch completes", sink.proc)
    assert output_ids(sink.out_dir / "real.jsonl") == [f"r{s}" for s in range(5)]
    # And the sink holds a bounded number of batches: the rest are dead-lettered
    wait_until(
        lambda: nsqd.depth(topics.dead, "inspect") >= 300 - 64,
        120,
        "results of batches over the limit dead-lettered",
        sink.proc,
    )
    # (exactly 64: the junk reached the sink's ledgers; were results refused earlier, e.g.
    # unsigned, this test would have to publish them as a caller would, answering asks)
    assert len(list(sink.out_dir.glob("junk-*.journal.jsonl"))) == 64
    assert sink.open_fds() < 200
    gauge = "gpt4batch_sink_batch_written_records{"
    lines = [line for line in sink.metrics().splitlines() if line.startswith(gauge)]
    labelled = {line.split('batch="')[1].split('"')[0] for line in lines}
    assert len(labelled) <= 100
    # (the completed batch keeps its gauge at written = expected: the dashboard's progress)
    assert f'{gauge}batch="real"}} 5.0' in lines


def test_a_stream_without_manifest_goes_on_through_a_flood_of_made_up_batches(
    start_sink: Callable[..., RunningSink], nsqd: Nsqd, topic_prefix: str
) -> None:
    topics = Topics(topic_prefix)
    sink = start_sink("--max-attempts", "2", max_fds=256)
    # Given a system streaming answers without a manifest (a legitimate use)
    feed = sink.out_dir / "feed.jsonl"
    mpub(nsqd, topics.results, [body(result(f"f{s}", "feed", s)) for s in range(3)])
    wait_until(lambda: len(output_ids(feed)) == 3, 60, "the stream's answers", sink.proc)
    # When 300 results with made-up batch ids arrive, then more of the stream
    mpub(nsqd, topics.results, junk_results())
    mpub(nsqd, topics.results, [body(result(f"f{s}", "feed", s)) for s in range(3, 5)])
    # Then the stream's answers keep coming out, in arrival order
    wait_until(lambda: len(output_ids(feed)) == 5, 60, "the stream's later answers", sink.proc)
    assert output_ids(feed) == [f"f{s}" for s in range(5)]


def body(msg: ResultMessage) -> bytes:
    return msg.model_dump_json().encode()
