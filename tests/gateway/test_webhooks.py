"""Webhooks (issue 22, item 5): the gateway POSTs a signed event when a batch ends, and a
receiver verifies it with the official SDK's `client.webhooks.unwrap` — over real nsqd, a
real caller and the simulator, the batches driven with the `openai` SDK."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from openai import OpenAI

from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    create,
    jsonl,
    request,
    start_caller,
    upload,
    wait_status,
)
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, wait_for
from tests.support.webhook_receiver import Delivery, WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"gateway-webhook-test-key-32bytes").decode()
WRONG_SECRET = "whsec_" + base64.b64encode(b"someone-elses-webhook-key-32byte").decode()


@pytest.fixture(scope="module")
def slow_mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "22", "--latency-ms", "250") as server:
        yield server


def secret_file(folder: Path) -> Path:
    path = folder / "webhook-secret"
    path.write_text(SECRET + "\n")
    path.chmod(0o600)
    return path


def webhook_gateway(
    procs: ServiceProcs, tmp_path: Path, receiver: WebhookReceiver, *flags: str
) -> Gateway:
    hooks = ["--webhook-url", receiver.url, "--webhook-secret-file", str(secret_file(tmp_path))]
    return Gateway(procs, tmp_path / "gw", *hooks, "--webhook-retry-delay", "0.2", *flags)


def unwrap(delivery: Delivery, secret: str = SECRET) -> Any:
    sdk = OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")
    return sdk.webhooks.unwrap(delivery.body, delivery.headers, secret=secret)


def outbox(gateway: Gateway) -> list[str]:
    folder = gateway.data_dir / "webhooks"
    return sorted(p.name for p in folder.iterdir() if p.suffix == ".json")


def test_completed_failed_and_cancelled_batches_are_announced_once_signed(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    with WebhookReceiver() as receiver:
        gateway = webhook_gateway(procs, tmp_path, receiver, "--window", "4").start()
        start_caller(procs, slow_mock, "--concurrency", "2")
        client = gateway.client()
        completed = create(client, upload(client, jsonl([request("a", "x"), request("b", "y")])))
        failed = create(client, upload(client, jsonl([request("a", "x"), "{not json"])))
        slow = jsonl([request(f"r{i}", "slow") for i in range(40)])
        cancelled = create(client, upload(client, slow))
        client.batches.cancel(cancelled.id)
        ends = {
            batch.id: wait_status(client, batch.id, TERMINAL, procs, 90).status
            for batch in (completed, failed, cancelled)
        }
        assert ends == {completed.id: "completed", failed.id: "failed", cancelled.id: "cancelled"}
        wait_for(lambda: len(receiver.delivered()) >= 3, 60, "3 webhooks", procs.assert_alive)
        wait_for(lambda: not outbox(gateway), 30, "the outbox to empty", procs.assert_alive)
        deliveries = receiver.deliveries()

    events = [unwrap(d) for d in deliveries]  # raises unless signed with our secret
    assert sorted((e.data.id, e.type) for e in events) == sorted(
        (batch_id, f"batch.{status}") for batch_id, status in ends.items()
    ), "one event per batch, of its end"
    for delivery, event in zip(deliveries, events, strict=True):
        assert delivery.path == "/hooks/batches" and delivery.answered == 200
        assert delivery.headers["webhook-id"] == event.id and event.id.startswith("evt_")
        assert delivery.headers["content-type"] == "application/json"
        assert json.loads(delivery.body) == {
            "id": event.id,
            "object": "event",
            "type": event.type,
            "created_at": event.created_at,
            "data": {"id": event.data.id},
        }
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(delivery, WRONG_SECRET)  # the signature is real: another key fails
        with pytest.raises(openai.InvalidWebhookSignatureError):
            unwrap(Delivery(delivery.path, delivery.headers, delivery.body + b" ", 200))
    gateway_log = (procs.logs / "gateway.log").read_text()
    assert SECRET not in gateway_log and SECRET.removeprefix("whsec_") not in gateway_log
    cmdline = Path(f"/proc/{procs.procs['gateway'].pid}/cmdline").read_bytes()
    assert SECRET.encode() not in cmdline


def test_a_failing_receiver_gets_the_same_event_until_it_answers_2xx(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    with WebhookReceiver(fail_first=3, fail_code=503) as receiver:
        gateway = webhook_gateway(procs, tmp_path, receiver).start()
        start_caller(procs, slow_mock)
        client = gateway.client()
        batch = create(client, upload(client, jsonl([request("a", "x")])))
        assert wait_status(client, batch.id, TERMINAL, procs, 60).status == "completed"
        wait_for(lambda: bool(receiver.delivered()), 60, "a delivery", procs.assert_alive)
        wait_for(lambda: not outbox(gateway), 30, "the outbox to empty", procs.assert_alive)
        deliveries = receiver.deliveries()

    assert [d.answered for d in deliveries] == [503, 503, 503, 200]
    assert len({d.headers["webhook-id"] for d in deliveries}) == 1
    assert {unwrap(d).data.id for d in deliveries} == {batch.id}  # each attempt signed afresh
    stamps = [int(d.headers["webhook-timestamp"]) for d in deliveries]
    assert stamps == sorted(stamps)
    retries = [e for e in procs.log_events("gateway") if e.get("event", "").startswith("webhook")]
    assert [e["event"] for e in retries].count("webhook attempt failed, retrying") == 3


def test_an_undelivered_event_is_delivered_once_after_a_restart(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    with WebhookReceiver(failing=True) as receiver:
        gateway = webhook_gateway(procs, tmp_path, receiver).start()
        start_caller(procs, slow_mock)
        client = gateway.client()
        batch = create(client, upload(client, jsonl([request("a", "x"), request("b", "y")])))
        assert wait_status(client, batch.id, TERMINAL, procs, 60).status == "completed"
        wait_for(lambda: len(receiver.deliveries()) >= 2, 60, "2 attempts", procs.assert_alive)
        assert procs.stop("gateway") == 0
        assert outbox(gateway) == [f"{batch.id}.json"], "kept on disk across the stop"
        refused = receiver.deliveries()

        receiver.failing = False
        Gateway.start(gateway)  # the same data dir
        wait_for(lambda: bool(receiver.delivered()), 60, "the delivery", procs.assert_alive)
        wait_for(lambda: not outbox(gateway), 30, "the outbox to empty", procs.assert_alive)
        assert procs.stop("gateway") == 0
        delivered = receiver.delivered()

    assert len(delivered) == 1
    assert {d.headers["webhook-id"] for d in refused + delivered} == {
        delivered[0].headers["webhook-id"]
    }, "the same event id before and after the restart"
    event = unwrap(delivered[0])
    assert (event.type, event.data.id) == ("batch.completed", batch.id)


def test_an_expired_batch_is_announced(
    procs: ServiceProcs, slow_mock: MockUpstream, tmp_path: Path
) -> None:
    """40 calls of 0.25 s one at a time take 10 s: the batch expires at its 3 s window."""
    with WebhookReceiver() as receiver:
        gateway = webhook_gateway(procs, tmp_path, receiver, "--window", "2").start()
        start_caller(procs, slow_mock, "--concurrency", "1")
        client = gateway.client()
        lines = jsonl([request(f"r{i}", "slow") for i in range(40)])
        batch = client.batches.create(
            input_file_id=upload(client, lines),
            endpoint="/v1/chat/completions",
            completion_window="3s",  # type: ignore[arg-type]
        )
        assert wait_status(client, batch.id, TERMINAL, procs, 90).status == "expired"
        wait_for(lambda: bool(receiver.delivered()), 60, "the delivery", procs.assert_alive)
        wait_for(lambda: not outbox(gateway), 30, "the outbox to empty", procs.assert_alive)
        deliveries = receiver.deliveries()

    assert len(deliveries) == 1
    event = unwrap(deliveries[0])
    assert (event.type, event.data.id) == ("batch.expired", batch.id)
