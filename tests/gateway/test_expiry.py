"""Expiry, file expiry and partial output of the Batch API gateway (issue 22, items 4 and
6), driven by the official `openai` SDK over real nsqd, a real caller and the simulator."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from tests.gateway.test_openai_sdk import (
    KEY,
    TERMINAL,
    Gateway,
    jsonl,
    lines_of,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, wait_for


@pytest.fixture(scope="module")
def slower_mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "13", "--latency-ms", "700") as server:
        yield server


def create(client: OpenAI, file_id: str, window: str, **extra: Any) -> Any:
    return client.batches.create(
        input_file_id=file_id,
        endpoint="/v1/chat/completions",
        completion_window=window,  # type: ignore[arg-type]
        **extra,
    )


def running(
    procs: ServiceProcs,
    mock: MockUpstream,
    gateway_dir: Path,
    window: str,
    concurrency: str,
    ids: list[str],
    completion_window: str,
) -> tuple[Gateway, OpenAI, Any]:
    """A gateway with `--window window`, a caller of `concurrency`, and a batch of `ids`."""
    gateway = Gateway(procs, gateway_dir, "--window", window).start()
    start_caller(procs, mock, "--concurrency", concurrency)
    client = gateway.client()
    mock.reset()
    data = jsonl([request(i, f"q {i}") for i in ids])
    return gateway, client, create(client, upload(client, data), completion_window)


def chat_calls(mock: MockUpstream) -> int:
    return sum(v for k, v in mock.stats().get("calls", {}).items() if "chat" in k)


def assert_expired(client: OpenAI, done: Any, ids: list[str]) -> list[dict[str, Any]]:
    """The expired batch's files and counts as the real API has them; its output lines."""
    assert done.status == "expired", done
    assert done.expired_at and done.finalizing_at and done.in_progress_at
    assert done.expires_at <= done.finalizing_at <= done.expired_at
    assert done.completed_at is None and done.errors is None
    output = lines_of(client, done.output_file_id)
    errors = lines_of(client, done.error_file_id)
    assert sorted(x["custom_id"] for x in output + errors) == sorted(ids)  # each exactly once
    assert output, "what finished before the window is kept"
    for line in output:
        assert line["response"]["status_code"] == 200 and line["error"] is None
    expired = [x for x in errors if (x["error"] or {}).get("code") == "batch_expired"]
    assert expired and len(expired) == len(errors) - done.request_counts.failed
    for line in expired:
        assert line["response"] is None and line["id"].startswith("batch_req_")
        assert line["error"]["message"]
    counts = done.request_counts
    # the real API's counts for an expired batch: the expired requests are neither
    assert (counts.total, counts.completed) == (len(ids), len(output))
    assert counts.completed + counts.failed + len(expired) == counts.total
    return output


def caller_counter(procs: ServiceProcs, name: str) -> float:
    """The caller's counter `name` (a full sample name, labels included), 0 if absent."""
    text = httpx.get(f"http://127.0.0.1:{procs.metrics_ports['caller']}/metrics").text
    found = [line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")]
    return float(found[0]) if found else 0.0


def test_a_batch_past_its_window_expires(
    procs: ServiceProcs, slower_mock: MockUpstream, tmp_path: Path
) -> None:
    # A caller on NSQ makes its first call some 3.5 s after its first ask (it listens for
    # stops 1.5 s, then joins its limit group): an 8 s window leaves room for calls under
    # load. The gateway's window of 8 asks against the caller's 2 in flight keeps asks
    # queued on nsqd at every moment, so some are queued when the window passes (with 4,
    # the window could pass just as the queued pair was handed over: none was left).
    ids = [f"r{i}" for i in range(40)]
    _, client, batch = running(procs, slower_mock, tmp_path / "gw", "8", "2", ids, "8s")
    assert batch.completion_window == "8s" and batch.expires_at == batch.created_at + 8
    assert wait_status(client, batch.id, ("in_progress",), procs, 30).expired_at is None

    done = wait_status(client, batch.id, TERMINAL, procs, 90)

    output = assert_expired(client, done, ids)
    assert len(output) < 40, "40 calls of 0.7 s two at a time take 14 s: not within 8 s"
    # Every paid call is in the files and counted once: the calls still running when the
    # window passed were waited for (the batch ends once every published ask has a result).
    calls = chat_calls(slower_mock)
    counts = done.request_counts
    redelivered = caller_counter(procs, "gpt4batch_caller_redelivered_answered_total")
    assert calls == counts.completed + counts.failed, (calls, counts, redelivered)
    time.sleep(2)
    assert chat_calls(slower_mock) == calls, "no upstream call for it after it expired"
    assert client.batches.retrieve(batch.id).status == "expired"
    stops = [e for e in procs.log_events("gateway") if e.get("event") == "batch stopped"]
    assert [(e["batch"], e["reason"]) for e in stops] == [(batch.id, "expired")]
    # the asks already queued on nsqd were answered unrun by the caller, told over the bus
    skipped = 'gpt4batch_caller_stopped_asks_total{reason="expired"}'
    assert caller_counter(procs, skipped) >= 1


def test_a_window_that_passed_while_the_gateway_was_down(
    procs: ServiceProcs, slower_mock: MockUpstream, tmp_path: Path
) -> None:
    ids = [f"k{i}" for i in range(20)]
    # 10 s: the caller's first call comes some 3.5 s after its first ask (see above)
    gateway, client, batch = running(procs, slower_mock, tmp_path / "gw", "2", "1", ids, "10s")

    def some_done() -> bool:
        return client.batches.retrieve(batch.id).request_counts.completed >= 1

    wait_for(some_done, 30, "a first result", procs.assert_alive)
    assert time.time() < batch.expires_at, "the first result came after the window"
    procs.kill("gateway")  # a crash, before the window ends
    while time.time() < batch.expires_at + 2:
        time.sleep(0.2)
    Gateway.start(gateway)

    done = wait_status(client, batch.id, TERMINAL, procs, 60)

    assert_expired(client, done, ids)
    assert done.expired_at >= batch.expires_at + 2  # decided after the restart


def test_output_expires_after_deletes_files(
    procs: ServiceProcs, slower_mock: MockUpstream, tmp_path: Path
) -> None:
    gateway = Gateway(procs, tmp_path / "gw", "--min-file-expiry", "2").start()
    start_caller(procs, slower_mock, "--concurrency", "4")
    client = gateway.client()
    data = jsonl([request(f"o{i}", "hi") for i in range(2)])
    kept = client.files.create(file=("kept.jsonl", data), purpose="batch")
    assert kept.expires_at is None
    short = client.files.create(
        file=("short.jsonl", data),
        purpose="batch",
        expires_after={"anchor": "created_at", "seconds": 3},
    )
    assert short.expires_at == short.created_at + 3
    assert client.files.retrieve(short.id).expires_at == short.expires_at
    batch = create(
        client, kept.id, "24h", output_expires_after={"anchor": "created_at", "seconds": 4}
    )
    done = wait_status(client, batch.id, TERMINAL, procs, 60)
    assert done.status == "completed", done
    output = client.files.retrieve(done.output_file_id)
    assert output.expires_at == output.created_at + 4

    procs.kill("gateway")  # the expiries are kept: a restart honours them
    time.sleep(1)
    Gateway.start(gateway)

    def gone(file_id: str) -> bool:
        try:
            client.files.retrieve(file_id)
        except openai.NotFoundError:
            return True
        return False

    wait_for(lambda: gone(short.id) and gone(done.output_file_id), 30, "expired files deleted")
    assert not (gateway.data_dir / "files" / short.id).exists()
    assert not (gateway.data_dir / "files" / done.output_file_id).exists()
    assert client.files.content(kept.id).content == data  # no expiry: kept
    assert [f.id for f in client.files.list()] == [kept.id]

    for policy, where in (
        ({"anchor": "created_at", "seconds": 1}, "between 2 and 2592000"),
        ({"anchor": "created_at", "seconds": 2592001}, "between 2 and 2592000"),
        ({"anchor": "expires_at", "seconds": 3600}, "anchor"),
    ):
        with pytest.raises(openai.BadRequestError, match=where) as info:
            client.files.create(file=("x.jsonl", data), purpose="batch", expires_after=policy)
        assert info.value.body["param"] == "expires_after"
        with pytest.raises(openai.BadRequestError, match=where) as info:
            create(client, kept.id, "24h", output_expires_after=policy)
        assert info.value.body["param"] == "output_expires_after"


def test_windows_other_than_24h(procs: ServiceProcs, tmp_path: Path) -> None:
    gateway = Gateway(procs, tmp_path / "gw").start()
    client = gateway.client()
    file_id = upload(client, jsonl([request("w", "x")]))
    for window, seconds in (("24h", 86400), ("30s", 30), ("10m", 600), ("2h", 7200)):
        batch = create(client, file_id, window)
        assert (batch.completion_window, batch.expires_at) == (window, batch.created_at + seconds)
    for bad in ("25", "0s", "24x", "31d", "1h30m", ""):
        with pytest.raises(openai.BadRequestError, match="completion_window") as info:
            create(client, file_id, bad)
        assert info.value.status_code == 400
        assert info.value.body["param"] == "completion_window"
        assert info.value.body["type"] == "invalid_request_error"


def partial(client: OpenAI, batch_id: str, **params: int) -> httpx.Response:
    return client.get(
        f"/batches/{batch_id}/partial_output",
        cast_to=httpx.Response,
        options={"params": params},
    )


def test_partial_output_grows_while_a_slow_batch_runs(
    procs: ServiceProcs, slower_mock: MockUpstream, tmp_path: Path
) -> None:
    ids = [f"p{i}" for i in range(16)]
    gateway, client, batch = running(procs, slower_mock, tmp_path / "gw", "4", "2", ids, "24h")

    # a client tailing it: ask from the offset the last page gave, until it is over
    tailed: list[dict[str, Any]] = []
    grew_while_running: list[int] = []
    after, status, more = 0, "validating", True
    deadline = time.monotonic() + 90
    while status not in TERMINAL or more:
        assert time.monotonic() < deadline, "the batch did not finish"
        procs.assert_alive()
        page = partial(client, batch.id, after=after, limit=3)
        assert page.status_code == 200
        lines = [json.loads(x) for x in page.text.splitlines()]
        assert int(page.headers["X-Next-After"]) == after + len(lines) and len(lines) <= 3
        status, more = page.headers["X-Batch-Status"], page.headers["X-Has-More"] == "true"
        if lines and status == "in_progress":
            grew_while_running.append(len(tailed) + len(lines))
        tailed += lines
        after += len(lines)
        if not lines:
            time.sleep(0.2)

    assert len(grew_while_running) >= 2, "partial output grew page by page while it ran"
    done = client.batches.retrieve(batch.id)
    assert done.status == "completed"
    output = lines_of(client, done.output_file_id)
    key = lambda x: x["custom_id"]  # noqa: E731
    assert sorted(tailed, key=key) == sorted(output, key=key)  # the output file's lines
    # pages after the end: one more page says nothing more is coming
    whole = partial(client, batch.id)
    assert len(whole.text.splitlines()) == 16 and whole.headers["X-Has-More"] == "false"
    some = partial(client, batch.id, after=10, limit=4)
    assert [json.loads(x) for x in some.text.splitlines()] == tailed[10:14]
    assert (some.headers["X-Next-After"], some.headers["X-Has-More"]) == ("14", "true")
    for bad in ({"after": -1}, {"limit": 0}, {"limit": 10_001}):
        with pytest.raises(openai.BadRequestError):
            partial(client, batch.id, **bad)
    with pytest.raises(openai.NotFoundError):
        partial(client, "batch_" + "0" * 24)
    assert partial(gateway.client(KEY), batch.id).status_code == 200
