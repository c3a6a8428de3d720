"""A file sink beside the gateway or `gpt4batch run -n` on the same nsqd (as in compose):
each batch is written once, by its owner (issue 20, "Three finishers").

The file sink's `sink` channel gets a copy of every result and manifest on the bus; the
gateway's and run's signed manifests name them as the batch's finisher, so the file sink
finishes those messages unwritten and leaves no file for the batch in its folder, while a
batch ingest publishes on the same bus is still the file sink's to write.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from gpt4batch.services.sink.elsewhere import FILE_NAME
from gpt4batch.services.sink.sink import batch_file_stem
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
from tests.support.nsq_servers import Nsqd
from tests.support.pipeline import ServiceProcs, read_jsonl, wait_for


def records(prefix: str, n: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}{i}", "asks": [{"id": "a0", "content": f"q {i}"}]} for i in range(n)]


def dropped_results(metrics_port: int) -> float:
    """gpt4batch_sink_not_ours_dropped_total{kind="result"} on the file sink's /metrics."""
    text = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "gpt4batch_sink_not_ours_dropped":
            for sample in family.samples:
                if sample.name.endswith("_total") and sample.labels.get("kind") == "result":
                    return sample.value
    return 0.0


def drained(nsqd: Nsqd, topic_prefix: str) -> bool:
    """The file sink's `sink` channels hold nothing more (queued, deferred or in flight)."""
    stats = httpx.get(f"http://{nsqd.http_address}/stats", params={"format": "json"}).json()
    for topic in stats["topics"]:
        if not topic["topic_name"].startswith(f"{topic_prefix}."):
            continue
        for channel in topic["channels"]:
            held = channel["depth"] + channel["in_flight_count"] + channel["deferred_count"]
            if channel["channel_name"] == "sink" and held:
                return False
    return True


def files_named(folder: Path, stem: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(stem))


def test_a_gateway_batch_is_not_written_again_by_the_file_sink_beside_it(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    out_dir = tmp_path / "outbox"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    gateway = Gateway(procs, tmp_path / "gw").start()
    client = gateway.client()
    with MockUpstream("--seed", "3") as mock:
        start_caller(procs, mock)
        ids = [f"req-{i}" for i in range(5)]
        batch = create(client, upload(client, jsonl([request(i, f"question {i}") for i in ids])))
        done = wait_status(client, batch.id, ("completed", "failed"), procs, 120)
        assert done.status == "completed", done
        assert sorted(x["custom_id"] for x in lines_of(client, done.output_file_id)) == ids

        # A batch ingest publishes on the same bus is still the file sink's.
        source = tmp_path / "file-batch.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in records("f", 4)))
        procs.run_once("ingest", "ingest", "-i", str(source), "--batch", "file-batch")
        wait_for((out_dir / "file-batch.done").exists, 90, "the file batch", procs.assert_alive)
    assert sorted(r["id"] for r in read_jsonl(out_dir / "file-batch.jsonl")) == [
        f"f{i}" for i in range(4)
    ]

    port = procs.metrics_ports["sink"]
    wait_for(lambda: drained(nsqd, topic_prefix), 60, "the file sink's channels to drain")
    assert files_named(out_dir, batch_file_stem(batch.id)) == []
    assert batch.id in (out_dir / FILE_NAME).read_text()
    # Results that came after the manifest are counted; one before it is removed with it.
    assert dropped_results(port) >= 1


def test_a_run_batch_is_not_written_by_a_file_sink_on_the_same_nsqd(
    procs: ServiceProcs, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    """`run -n` with the services' secret: its results verify at the file sink too."""
    out_dir = tmp_path / "outbox"
    procs.start("sink", "sink", "--out-dir", str(out_dir))
    source = tmp_path / "in.jsonl"
    source.write_text("".join(json.dumps(r) + "\n" for r in records("r", 6)))
    with MockUpstream("--seed", "4") as sim:
        finished = subprocess.run(
            [sys.executable, "-m", "gpt4batch.cli", "run", "-i", "in.jsonl", "-o", "out.jsonl",
             "-n", "--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix,
             "--batch", "runb", "--base-url", sim.url, "--access-token", sim.token, "-q", "0"],
            cwd=tmp_path, capture_output=True, text=True, timeout=180, env=procs.env,
        )  # fmt: skip
    assert finished.returncode == 0, finished.stderr[-2000:]
    assert [r["id"] for r in read_jsonl(tmp_path / "out.jsonl")] == [f"r{i}" for i in range(6)]

    wait_for(lambda: drained(nsqd, topic_prefix), 60, "the file sink's channels to drain")
    assert files_named(out_dir, "runb") == []
    assert "runb" in (out_dir / FILE_NAME).read_text()
    assert dropped_results(procs.metrics_ports["sink"]) >= 1
