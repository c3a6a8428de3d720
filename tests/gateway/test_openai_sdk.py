"""The Batch API gateway driven by the official `openai` SDK, over real nsqd, a real caller
process and the simulator: what a user of the real Batch API would do, unchanged."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import free_port
from tests.support.pipeline import ServiceProcs, wait_for

KEY = "sk-gateway-test"
TERMINAL = ("completed", "failed", "cancelled", "expired")


@pytest.fixture(scope="module")
def flaky_mock() -> Iterator[MockUpstream]:
    """30% of chat calls fail with a 5xx: with no retries, some requests end in the error file."""
    with MockUpstream("--seed", "13", "--fault-5xx", "0.3") as server:
        yield server


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "13", "--latency-ms", "250") as server:
        yield server


class Gateway:
    def __init__(self, procs: ServiceProcs, data_dir: Path, *flags: str) -> None:
        self.procs = procs
        self.data_dir = data_dir
        self.port = free_port()
        self.flags = flags

    def start(self) -> Gateway:
        self.procs.start(
            "gateway",
            "gateway",
            "--port", str(self.port), "--host", "127.0.0.1",
            "--data-dir", str(self.data_dir), "--api-key", KEY, *self.flags,
        )  # fmt: skip
        # /metrics answers before the API listens: wait for the API itself.
        wait_for(self._answers, 30, "the gateway's API", self.procs.assert_alive)
        return self

    def _answers(self) -> bool:
        try:
            httpx.get(f"http://127.0.0.1:{self.port}/v1/batches", timeout=2)
        except httpx.TransportError:
            return False
        return True

    def client(self, key: str = KEY) -> OpenAI:
        return OpenAI(base_url=f"http://127.0.0.1:{self.port}/v1", api_key=key, max_retries=0)


def start_caller(procs: ServiceProcs, mock: MockUpstream, *extra: str) -> None:
    procs.start(
        "caller",
        "caller",
        "--upstream", "openai", "--base-url", mock.url, "--access-token", mock.token,
        "--qps", "0", "--retries", "0", *extra,
    )  # fmt: skip


def request(custom_id: str, text: str, **body: Any) -> dict[str, Any]:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}]
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "gpt-4o-mini", "messages": messages, **body},
    }


def jsonl(lines: list[Any]) -> bytes:
    return "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines).encode()


def upload(client: OpenAI, data: bytes, name: str = "input.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="batch").id


def create(client: OpenAI, file_id: str) -> Any:
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "test"},
    )


def wait_status(
    client: OpenAI, batch_id: str, statuses: tuple[str, ...], procs: ServiceProcs, timeout: float
) -> Any:
    found: list[Any] = []

    def reached() -> bool:
        found[:] = [client.batches.retrieve(batch_id)]
        return found[0].status in statuses

    wait_for(reached, timeout, f"batch {batch_id} to be {statuses}", procs.assert_alive)
    return found[0]


def lines_of(client: OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    if file_id is None:
        return []
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines() if x]


def test_upload_create_poll_download(
    procs: ServiceProcs, flaky_mock: MockUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    start_caller(procs, flaky_mock)
    client = gateway.client()
    ids = [f"req-{i}" for i in range(40)]
    data = jsonl([request(i, f"question {i}") for i in ids])

    uploaded = client.files.create(file=("input.jsonl", data), purpose="batch")
    assert (uploaded.object, uploaded.purpose, uploaded.bytes) == ("file", "batch", len(data))
    assert client.files.retrieve(uploaded.id).filename == "input.jsonl"
    assert client.files.content(uploaded.id).content == data

    batch = create(client, uploaded.id)
    assert batch.status in ("validating", "in_progress")
    assert batch.endpoint == "/v1/chat/completions" and batch.metadata == {"job": "test"}
    done = wait_status(client, batch.id, TERMINAL, procs, 90)

    assert done.status == "completed", done
    assert done.completed_at and done.finalizing_at and done.in_progress_at
    output = lines_of(client, done.output_file_id)
    errors = lines_of(client, done.error_file_id)
    counts = done.request_counts
    assert (counts.total, counts.completed, counts.failed) == (40, len(output), len(errors))
    assert output and errors, "a 30% fault rate with no retries gives both outcomes"
    # every custom_id exactly once, across the two files
    assert sorted(x["custom_id"] for x in output + errors) == sorted(ids)
    for line in output:
        assert line["error"] is None and line["id"].startswith("batch_req_")
        response = line["response"]
        assert response["status_code"] == 200 and response["request_id"]
        completion = response["body"]
        assert completion["object"] == "chat.completion"
        content = completion["choices"][0]["message"]["content"]
        assert f"question {line['custom_id']}" in content
        assert "turns=2" in content, "the system message went along"
        assert completion["model"] == "gpt-4o-mini"
    for line in errors:
        failure = line["response"] or {}
        assert failure.get("status_code", 0) >= 500 or line["error"], line
    # the output file is an ordinary file of the API
    meta = client.files.retrieve(done.output_file_id)
    assert meta.purpose == "batch_output" and meta.bytes > 0


def test_list_with_pagination_and_wrong_key(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    client = gateway.client()
    file_id = upload(client, jsonl([request("a", "x")]))
    created = [create(client, file_id).id for _ in range(5)]

    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == created[::-1][:2] and page.has_more
    listed = [b.id for b in client.batches.list(limit=2)]  # auto-pagination: `after`
    assert listed == created[::-1]
    first = wait_status(client, created[0], ("in_progress",), procs, 30)
    assert first.request_counts.total == 1 and first.in_progress_at

    wrong = gateway.client("sk-wrong")
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.batches.list()
    assert info.value.status_code == 401
    assert info.value.body["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.files.content(file_id)
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")
    with pytest.raises(openai.BadRequestError, match="/v1/moderations"):
        client.batches.create(
            input_file_id=file_id,
            endpoint="/v1/moderations",  # type: ignore[arg-type]
            completion_window="24h",
        )


def test_malformed_file_fails_with_line_errors(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    client = gateway.client()
    bad = request("b", "x")
    bad["url"] = "/v1/embeddings"
    lines = [
        request("a", "fine"),
        "{not json",
        {"custom_id": "c", "method": "POST", "url": "/v1/chat/completions"},
        request("a", "duplicate id"),
        bad,
        request("d", "fine too"),
    ]
    batch = create(client, upload(client, jsonl(lines)))
    failed = wait_status(client, batch.id, TERMINAL, procs, 30)

    assert failed.status == "failed" and failed.failed_at
    assert failed.output_file_id is None and failed.error_file_id is None
    errors = {(e.line, e.code, e.param) for e in failed.errors.data}
    assert errors == {
        (2, "invalid_json_line", None),
        (3, "missing_required_parameter", "body"),
        (4, "duplicate_custom_id", "custom_id"),
        (5, "mismatched_endpoint", "url"),
    }
    assert all(e.message for e in failed.errors.data)


def test_cancel_a_running_batch(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw", "--window", "4").start()
    start_caller(procs, slow_mock, "--concurrency", "2")
    client = gateway.client()
    slow_mock.reset()
    batch = create(client, upload(client, jsonl([request(f"r{i}", "slow") for i in range(60)])))

    def some_done() -> bool:
        return client.batches.retrieve(batch.id).request_counts.completed >= 2

    wait_for(some_done, 60, "first results", procs.assert_alive)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait_status(client, batch.id, TERMINAL, procs, 60)

    assert done.status == "cancelled" and done.cancelled_at
    output = lines_of(client, done.output_file_id)
    counts = done.request_counts
    assert counts.total == 60 and counts.completed == len(output)
    assert 2 <= counts.completed + counts.failed <= 20, counts
    calls = slow_mock.stats()
    chat_calls = sum(v for k, v in calls.get("calls", {}).items() if "chat" in k)
    assert chat_calls == counts.completed + counts.failed, calls  # nothing paid after it
    time.sleep(1.5)
    assert client.batches.retrieve(batch.id).status == "cancelled"


def test_restart_mid_batch(procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path / "gw", "--window", "10").start()
    start_caller(procs, slow_mock, "--concurrency", "8")
    client = gateway.client()
    ids = [f"r{i}" for i in range(80)]
    batch = create(client, upload(client, jsonl([request(i, f"q {i}") for i in ids])))

    def some_done() -> bool:
        return client.batches.retrieve(batch.id).request_counts.completed >= 10

    wait_for(some_done, 60, "first results", procs.assert_alive)
    procs.kill("gateway")  # a crash: no drain, no goodbye
    Gateway.start(gateway)
    after = client.batches.retrieve(batch.id)
    assert after.status == "in_progress" and after.request_counts.completed >= 10
    done = wait_status(client, batch.id, TERMINAL, procs, 120)

    assert done.status == "completed", done
    output = lines_of(client, done.output_file_id)
    assert sorted(x["custom_id"] for x in output) == sorted(ids)
    assert done.request_counts.completed == 80 and done.request_counts.failed == 0


def test_gpt4batch_format_is_detected(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    start_caller(procs, slow_mock, "--concurrency", "8")
    client = gateway.client()
    records = [
        {"id": f"g{i}", "asks": [{"id": "1", "content": f"hi {i}"}, {"id": "2", "content": "and?"}]}
        for i in range(5)
    ]
    batch = create(client, upload(client, jsonl(records)))
    done = wait_status(client, batch.id, TERMINAL, procs, 60)

    assert done.status == "completed", done
    output = lines_of(client, done.output_file_id)
    assert sorted(r["id"] for r in output) == [f"g{i}" for i in range(5)]
    for record in output:  # gpt4batch format out: the record plus its answers
        assert len(record["answers"]) == 2 and record.get("iErr") is None
        assert record["asks"][0]["content"].startswith("hi ")


def test_the_example_in_the_docs_runs(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    start_caller(procs, slow_mock, "--concurrency", "8")
    requests = tmp_path / "requests.jsonl"
    requests.write_bytes(jsonl([request(f"d{i}", f"doc {i}") for i in range(3)]))
    doc = (Path(__file__).resolve().parents[2] / "docs/batch-api.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    assert len(example.strip().splitlines()) <= 20  # short enough to read at a glance
    example = (
        example.replace("http://localhost:8080/v1", f"http://127.0.0.1:{gateway.port}/v1")
        .replace("sk-my-gateway-key", KEY)
        .replace('"requests.jsonl"', repr(str(requests)))
        .replace("time.sleep(5)", "time.sleep(0.2)")
    )
    exec(compile(example, "docs/batch-api.md", "exec"), {})

    printed = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.strip()]
    assert sorted(x["custom_id"] for x in printed) == ["d0", "d1", "d2"]


def test_no_key_no_gateway(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPT4BATCH_API_KEY")}
    argv = [sys.executable, "-m", "gpt4batch.services.gateway", "--data-dir", str(tmp_path)]
    argv += ["--nsqd-tcp-address", "127.0.0.1:1"]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    assert done.returncode == 2
    assert "--api-key" in done.stderr and "Traceback" not in done.stderr
    assert not list(tmp_path.iterdir()), "nothing is created before the options are right"
