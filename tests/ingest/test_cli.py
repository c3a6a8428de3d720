"""`python -m gpt4batch.services.ingest` as a process against the real nsqd fixture."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from gpt4batch.common.topics import Topics
from tests.support.nsq_servers import Nsqd, run_nsqd


def run_cli(args: list[str], stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "gpt4batch.services.ingest", *args],
        input=stdin,
        capture_output=True,
        timeout=60,
    )


def depth(nsqd: Nsqd, topic: str) -> int:
    """Messages waiting for the callers (ingest created their channel before publishing);
    0 for a topic nsqd has never seen (its /stats says `topics: null`)."""
    channel = "caller" if topic.endswith(".asks") else "sink"
    return nsqd.depth(topic, channel) if nsqd.stats(topic).get("topics") else 0


def sample(tmp_path: Path) -> Path:
    (tmp_path / "a.png").write_bytes(b"png")
    lines = [json.dumps({"id": f"r{i}", "asks": [{"id": "p", "content": "q"}]}) for i in range(7)]
    lines[2] = json.dumps({"id": "r2", "asks": [{"id": "p", "content": "q", "images": "a.png"}]})
    lines += ["", "not json", json.dumps({"id": "r0", "asks": [{"id": "p", "content": "q"}]})]
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_file_is_published_to_nsqd(nsqd: Nsqd, topic_prefix: str, tmp_path: Path) -> None:
    path = sample(tmp_path)
    topics = Topics(topic_prefix)

    done = run_cli(
        ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix, "-i", str(path)]
    )

    assert done.returncode == 0, done.stderr.decode()
    assert "total=9 published=7 passed_through=0 rejected=2" in done.stdout.decode()
    assert depth(nsqd, topics.asks) == 7
    assert depth(nsqd, topics.results) == 2
    assert depth(nsqd, topics.batches) == 1
    # the duplicate is logged with where and why
    assert '"line": 10, "id": "r0", "field": "id"' in done.stderr.decode()


def test_stdin_with_explicit_batch(nsqd: Nsqd, topic_prefix: str, tmp_path: Path) -> None:
    topics = Topics(topic_prefix)
    data = "".join(
        json.dumps({"id": f"s{i}", "asks": [{"id": "p", "content": "q"}]}) + "\n"
        for i in range(1200)
    ).encode()

    done = run_cli(
        [
            f"--nsqd-tcp-address={nsqd.tcp_address}",
            f"--topic-prefix={topic_prefix}",
            "--batch=mybatch",
            "--publish-batch-size=100",
            "-i",
            "-",
        ],
        stdin=data,
    )

    assert done.returncode == 0, done.stderr.decode()
    assert "batch=mybatch total=1200 published=1200" in done.stdout.decode()
    assert depth(nsqd, topics.asks) == 1200
    assert depth(nsqd, topics.results) == 0
    assert depth(nsqd, topics.batches) == 1


def test_missing_input_file_is_a_usage_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jsonl"

    done = run_cli(["--nsqd-tcp-address", "127.0.0.1:1", "-i", str(missing)])

    assert done.returncode == 2
    assert str(missing) in done.stderr.decode()
    assert "does not exist" in done.stderr.decode()


def test_no_nsq_address_is_a_usage_error(tmp_path: Path) -> None:
    done = run_cli(["-i", str(sample(tmp_path))])

    assert done.returncode == 2
    assert "--nsqd-tcp-address" in done.stderr.decode()


def test_a_rerun_into_a_new_nsqd_publishes_every_record(tmp_path: Path, topic_prefix: str) -> None:
    """Given a file published with batch id "same" to one nsqd (the index in the state
    folder says so), when the same file and batch id go to a new nsqd, every record is
    published there (not `published=0`), with one line saying why; a re-run on that nsqd,
    and one on the first nsqd after its restart, publish nothing again."""
    source = tmp_path / "in.jsonl"
    source.write_text(
        "".join(
            json.dumps({"id": f"r{i}", "asks": [{"id": "p", "content": "q"}]}) + "\n"
            for i in range(5)
        )
    )
    asks = Topics(topic_prefix).asks

    def ingest_into(nsqd: Nsqd) -> subprocess.CompletedProcess[bytes]:
        args = ["--nsqd-tcp-address", nsqd.tcp_address, "--topic-prefix", topic_prefix]
        done = run_cli([*args, "-i", str(source), "--batch", "same", "--progress", "off"])
        assert done.returncode == 0, done.stderr.decode()[-2000:]
        return done

    with run_nsqd(tmp_path, None, name="first") as first:
        assert b"published=5 " in ingest_into(first).stdout
        first.stop()
        first.start()  # the same nsqd, restarted: the batch's trace is still there
        assert b"published=0 " in ingest_into(first).stdout
        assert depth(first, asks) == 5
    with run_nsqd(tmp_path, None, name="second") as second:
        done = ingest_into(second)
        assert b"published=5 " in done.stdout
        said = [line for line in done.stderr.splitlines() if b"no trace of this batch" in line]
        assert len(said) == 1
        assert depth(second, asks) == 5
        assert b"published=0 " in ingest_into(second).stdout
        assert depth(second, asks) == 5
