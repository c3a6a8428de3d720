"""Attacks through nsqd by whoever can reach its HTTP port, replayed against real services.

Asks and batch manifests are open by design (the documented way in); results, result
parts, download jobs, downloaded notices, batch stop notices and dead letters carry an
authenticator (common/authenticator.py), and so does a manifest's claim that another owner
than the file sink finishes its batch. Here a made-up result or dead letter is `/pub`lished to the
test's real nsqd while a real gateway (driven with the `openai` SDK) or a real sink is
waiting for the real answer: the forgery is refused and counted, the batch does not
complete on it, and the real answer, once it comes, is what the output holds.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

from gpt4batch.common.messages import (
    AskMessage,
    BatchManifest,
    BatchStopped,
    DeadLetter,
    DownloadJob,
    DownloadResult,
    Record,
    ResultMessage,
)
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.common.result_parts import split_result
from gpt4batch.common.settings import BaseServiceSettings
from gpt4batch.services.sink.elsewhere import FILE_NAME
from tests.downloader.fileserver import serve_files
from tests.gateway.test_openai_sdk import (
    Gateway,
    create,
    jsonl,
    lines_of,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, Nsqlookupd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for

FORGED = "FORGED ANSWER"


def pub(nsqd: Nsqd, topic: str, body: bytes) -> None:
    """What an attacker on the network does: one HTTP /pub to nsqd."""
    reply = httpx.post(f"http://{nsqd.http_address}/pub", params={"topic": topic}, content=body)
    assert reply.status_code == 200, reply.text


def forged_result(batch: str, seq: int, record_id: str) -> bytes:
    answer = {"message_id": "m-forged", "contents": [{"type": "text", "text": FORGED}]}
    record = Record.model_validate(
        {"id": record_id, "asks": [{"id": "a0", "content": "hi"}], "answers": [answer]}
    )
    return ResultMessage(batch=batch, seq=seq, record=record).model_dump_json().encode()


def forged_letter(topic: str, body: bytes) -> bytes:
    """A dead letter as our services write them, saying the message of `body` died."""
    return (
        DeadLetter(
            topic=topic,
            channel="caller",
            service="caller",
            id="0000000000000001",
            attempts=10,
            reason="gave up after 10 attempts",
            at=time.time(),
            body=body.decode(),
            body_size=len(body),
        )
        .model_dump_json()
        .encode()
    )


def refused(metrics_port: int, topic: str) -> float:
    """gpt4batch_refused_messages_total of `topic` on a service's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    total = 0.0
    for family in text_string_to_metric_families(text):
        if family.name == "gpt4batch_refused_messages":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("topic") == topic:
                    total += sample.value
    return total


def publish_signed(
    nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str, topic: str, msg: BaseModel
) -> None:
    """What one of our services does: publish with the services' shared secret."""
    settings = BaseServiceSettings(
        nsqd_tcp_address=[nsqd.tcp_address],
        lookupd_http_address=[nsqlookupd.http_address],
        topic_prefix=topic_prefix,
    )

    async def publish() -> None:
        bus = NsqBus(settings, service="caller", prepare={})
        await bus.start()
        try:
            await bus.publish(topic, msg)
        finally:
            await bus.stop(grace=1)

    asyncio.run(publish())


def answer_texts(lines: list[dict[str, Any]]) -> str:
    return json.dumps(lines)


def test_forged_result_and_dead_letter_do_not_complete_a_gateway_batch(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    metrics_port = procs.metrics_ports["gateway"]
    client = gateway.client()
    batch = create(client, upload(client, jsonl([request("req-0", "question 0")])))
    wait_status(client, batch.id, ("in_progress",), procs, 60)
    results, dead = f"{topic_prefix}.results", f"{topic_prefix}.dead"

    # 1. A made-up result for the batch's only request, straight to nsqd.
    pub(nsqd, results, forged_result(batch.id, 0, "req-0"))
    # 2. A made-up dead letter saying the request's ask died (its record would fail).
    ask = AskMessage(batch=batch.id, seq=0, record=Record(id="req-0", asks=[]))
    pub(nsqd, dead, forged_letter(f"{topic_prefix}.asks", ask.model_dump_json().encode()))

    def settled() -> bool:  # refused both (the fix), or taken in (the attack works)
        refusals = refused(metrics_port, results) >= 1 and refused(metrics_port, dead) >= 1
        return refusals or client.batches.retrieve(batch.id).status != "in_progress"

    wait_for(settled, 60, "the gateway to handle both forgeries", procs.assert_alive)
    # The letter of the refused result (written by the gateway, marked unauthenticated)
    # reaches the gateway's dead channel too: give it time to be (not) counted.
    time.sleep(3)
    now = client.batches.retrieve(batch.id)
    assert now.status == "in_progress", now
    assert (now.request_counts.completed, now.request_counts.failed) == (0, 0)

    # The real answer comes later and is the one kept.
    with MockUpstream("--seed", "7") as mock:
        start_caller(procs, mock)
        done = wait_status(client, batch.id, ("completed", "failed"), procs, 120)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (1, 0)
    output = lines_of(client, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["req-0"]
    assert FORGED not in answer_texts(output)
    assert lines_of(client, done.error_file_id) == []


def test_forged_result_does_not_complete_a_file_batch_at_the_sink(
    procs: ServiceProcs, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "out"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    metrics_port = procs.metrics_ports["sink"]
    results, dead = f"{topic_prefix}.results", f"{topic_prefix}.dead"
    manifest = BatchManifest(batch="b1", total=1)  # manifests are open, like asks
    pub(nsqd, f"{topic_prefix}.batches", manifest.model_dump_json().encode())
    pub(nsqd, results, forged_result("b1", 0, "r0"))
    # A forged result signed with a guessed secret is no better.
    guessed = forged_result("b1", 0, "r0")[:-1] + b',"auth":"' + b"0" * 64 + b'"}'
    pub(nsqd, results, guessed)
    pub(nsqd, dead, forged_letter(results, forged_result("b1", 0, "r0")))
    output = out_dir / "b1.jsonl"

    def settled() -> bool:  # refused all three (the fix), or the batch written (the attack)
        refusals = refused(metrics_port, results) >= 2 and refused(metrics_port, dead) >= 1
        return refusals or (out_dir / "b1.done").exists()

    wait_for(settled, 60, "the sink to handle the forgeries", procs.assert_alive)
    time.sleep(3)  # the letters of the refused results reach the sink's dead channel
    assert not (out_dir / "b1.done").exists()
    assert not output.exists() or read_jsonl(output) == []

    # The real result, published by one of ours (a bus with the services' secret).
    real = Record.model_validate(
        {"id": "r0", "asks": [{"id": "a0", "content": "hi"}], "answers": [{"message_id": "m"}]}
    )
    publish_signed(
        nsqd, nsqlookupd, topic_prefix, results, ResultMessage(batch="b1", seq=0, record=real)
    )
    wait_for(lambda: (out_dir / "b1.done").exists(), 60, "the batch", procs.assert_alive)
    lines = read_jsonl(output)
    assert [line["id"] for line in lines] == ["r0"]
    assert lines[0]["answers"] == [{"message_id": "m"}]
    assert FORGED not in json.dumps(lines)


def test_forged_download_job_is_refused_and_never_fetched(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """A made-up download job would make the downloader fetch any URL into its folder."""
    folder = tmp_path / "downloads"
    procs.start("downloader", "downloader", "--download-dir", str(folder))
    metrics_port = procs.metrics_ports["downloader"]
    downloads = f"{topic_prefix}.downloads"
    with serve_files({"payload.bin": b"attacker's bytes"}) as server:
        job = DownloadJob(
            batch="b", record_id="r", ask_id="a", url=f"{server.url}/f/payload.bin", local="x.bin"
        )
        pub(nsqd, downloads, job.model_dump_json().encode())

        def settled() -> bool:  # refused (the fix), or fetched (the attack works)
            return refused(metrics_port, downloads) >= 1 or server.hits["/f/payload.bin"] > 0

        wait_for(settled, 60, "the downloader to handle the forged job", procs.assert_alive)
        time.sleep(1)
        assert server.hits["/f/payload.bin"] == 0
    assert refused(metrics_port, downloads) == 1
    assert not (folder / "x.bin").exists()


def test_forged_result_parts_do_not_complete_a_file_batch_at_the_sink(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """A forged result too large for one message, sent as pieces that join up correctly."""
    out_dir = tmp_path / "out"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    metrics_port = procs.metrics_ports["sink"]
    parts = f"{topic_prefix}.results.parts"
    manifest = BatchManifest(batch="b2", total=1)
    pub(nsqd, f"{topic_prefix}.batches", manifest.model_dump_json().encode())
    forged = ResultMessage.model_validate_json(forged_result("b2", 0, "r0"))
    forged.record.asks[0].content = "x" * 4000
    body = forged.model_dump_json().encode()
    pieces = split_result(forged, body, limit=1024 + 4 * len(forged.record.id) + 1500)
    assert len(pieces) >= 2
    for piece in pieces:
        pub(nsqd, parts, piece.model_dump_json().encode())

    def settled() -> bool:  # refused every piece (the fix), or the batch written (the attack)
        return refused(metrics_port, parts) >= len(pieces) or (out_dir / "b2.done").exists()

    wait_for(settled, 60, "the sink to handle the forged pieces", procs.assert_alive)
    time.sleep(3)  # the letters of the refused pieces reach the sink's dead channel
    assert not (out_dir / "b2.done").exists()
    output = out_dir / "b2.jsonl"
    assert not output.exists() or FORGED not in output.read_text()


def test_forged_downloaded_notice_does_not_complete_a_download_or_a_batch(
    procs: ServiceProcs, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str, tmp_path: Path
) -> None:
    """A made-up `downloaded` notice saying a planned file was fetched: the record's
    download and the batch must wait for the downloader's real one."""
    out_dir = tmp_path / "out"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    metrics_port = procs.metrics_ports["sink"]
    downloaded = f"{topic_prefix}.downloaded"
    pub(
        nsqd,
        f"{topic_prefix}.batches",
        BatchManifest(batch="b3", total=1).model_dump_json().encode(),
    )
    real = Record.model_validate(
        {"id": "r0", "asks": [{"id": "a0", "content": "hi"}], "answers": [{"message_id": "m"}]}
    )
    result = ResultMessage(batch="b3", seq=0, record=real, planned_downloads=["x.bin"])
    publish_signed(nsqd, nsqlookupd, topic_prefix, f"{topic_prefix}.results", result)
    wait_for(lambda: (out_dir / "b3.jsonl").exists(), 60, "the real result", procs.assert_alive)

    def notice(sha256: str) -> DownloadResult:
        return DownloadResult(
            batch="b3", record_id="r0", ask_id="a0", url="https://files.example/x",
            local="x.bin", ok=True, size=7, sha256=sha256,
        )  # fmt: skip

    forged = notice("f" * 64)
    pub(nsqd, downloaded, forged.model_dump_json().encode())
    guessed = forged.model_dump_json().encode()[:-1] + b',"auth":"' + b"0" * 64 + b'"}'
    pub(nsqd, downloaded, guessed)

    def settled() -> bool:  # refused both (the fix), or the batch written (the attack)
        return refused(metrics_port, downloaded) >= 2 or (out_dir / "b3.done").exists()

    wait_for(settled, 60, "the sink to handle the forged notices", procs.assert_alive)
    time.sleep(3)  # the letters of the refused notices reach the sink's dead channel
    assert not (out_dir / "b3.done").exists()
    rows = out_dir / "b3.downloads.jsonl"
    assert not rows.exists() or "f" * 64 not in rows.read_text()

    # The downloader's real notice completes the file and the batch.
    publish_signed(nsqd, nsqlookupd, topic_prefix, downloaded, notice("a" * 64))
    wait_for(lambda: (out_dir / "b3.done").exists(), 60, "the batch", procs.assert_alive)
    assert "a" * 64 in rows.read_text() and "f" * 64 not in rows.read_text()


def sink_counter(metrics_port: int, name: str) -> float:
    """A counter without labels on a service's /metrics (its name without `_total`)."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == name:
            return sum(s.value for s in family.samples if s.name.endswith("_total"))
    return 0.0


def test_forged_finisher_claim_does_not_make_the_file_sink_drop_a_batch(
    procs: ServiceProcs, nsqd: Nsqd, nsqlookupd: Nsqlookupd, topic_prefix: str, tmp_path: Path
) -> None:
    """The gateway's and run's manifests name them as the batch's finisher, and a file sink
    then drops that batch's messages unwritten. Manifests are open: a made-up manifest
    claiming another finisher for someone else's batch (unsigned, or with a guessed
    authenticator) must not make the file sink drop it."""
    out_dir = tmp_path / "out"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    metrics_port = procs.metrics_ports["sink"]
    batches = f"{topic_prefix}.batches"
    claim = BatchManifest(batch="b5", total=1, finisher="gateway").model_dump_json().encode()
    pub(nsqd, batches, claim)
    pub(nsqd, batches, claim[:-1] + b',"auth":"' + b"0" * 64 + b'"}')
    unsigned = "gpt4batch_sink_unsigned_finisher_claims"

    def settled() -> bool:  # both claims ignored (the fix), or the batch handed over (attack)
        return sink_counter(metrics_port, unsigned) >= 2 or (out_dir / FILE_NAME).exists()

    wait_for(settled, 60, "the sink to handle the forged claims", procs.assert_alive)

    # The batch's real result and manifest: the file sink writes it as always.
    real = Record.model_validate(
        {"id": "r0", "asks": [{"id": "a0", "content": "hi"}], "answers": [{"message_id": "m"}]}
    )
    result = ResultMessage(batch="b5", seq=0, record=real)
    publish_signed(nsqd, nsqlookupd, topic_prefix, f"{topic_prefix}.results", result)
    pub(nsqd, batches, BatchManifest(batch="b5", total=1).model_dump_json().encode())
    wait_for(lambda: (out_dir / "b5.done").exists(), 60, "the batch", procs.assert_alive)
    assert [line["id"] for line in read_jsonl(out_dir / "b5.jsonl")] == ["r0"]
    assert not (out_dir / FILE_NAME).exists()
    assert sink_counter(metrics_port, unsigned) == 2


def test_forged_cancel_does_not_stop_a_batch(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """Whoever can publish to nsqd may send asks, never stop someone's batch: a made-up
    `BatchStopped` (unsigned, or signed with a guessed secret) sent to the stopped topic
    while a batch runs is refused by the caller; the batch completes, every line answered."""
    lines = 12
    with MockUpstream("--seed", "9", "--latency-ms", "300") as mock:
        start_caller(procs, mock, "--concurrency", "2")
        gateway = Gateway(procs, tmp_path / "gw").start()
        client = gateway.client()
        data = jsonl([request(f"req-{i}", f"question {i}") for i in range(lines)])
        batch = create(client, upload(client, data))
        wait_status(client, batch.id, ("in_progress",), procs, 60)
        stopped = f"{topic_prefix}.stopped#ephemeral"
        forged = BatchStopped(batch=batch.id, reason="cancelled").model_dump_json().encode()
        guessed = forged[:-1] + b',"auth":"' + b"0" * 64 + b'"}'
        caller_metrics = procs.metrics_ports["caller"]
        while refused(caller_metrics, stopped) < 2:  # until the caller has seen both
            now = client.batches.retrieve(batch.id)
            assert now.status == "in_progress", f"ended before the caller refused them: {now}"
            pub(nsqd, stopped, forged)
            pub(nsqd, stopped, guessed)
            time.sleep(0.5)
        done = wait_status(client, batch.id, ("completed", "failed", "cancelled"), procs, 120)
        calls = mock.stats()["calls"].get("chat.completions", 0)
    assert done.status == "completed", done
    assert (done.request_counts.completed, done.request_counts.failed) == (lines, 0)
    assert len(lines_of(client, done.output_file_id)) == lines
    assert lines_of(client, done.error_file_id) == []
    assert calls == lines
