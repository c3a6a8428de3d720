"""The webhook sender without NSQ: signing as the official SDK verifies it, the options,
the outbox and the retry policy (the receiver is an httpx MockTransport)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai import OpenAI

from gpt4batch.common.errors import ConfigError
from gpt4batch.services.gateway.metrics import WEBHOOKS
from gpt4batch.services.gateway.webhooks.config import (
    MAX_RETRY_DELAY,
    WebhookConfig,
    check_url,
    redacted_url,
    webhook_config,
)
from gpt4batch.services.gateway.webhooks.delivery import Webhooks, retry_delay
from gpt4batch.services.gateway.webhooks.outbox import Event, Outbox
from gpt4batch.services.gateway.webhooks.signing import WebhookSecret

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()
OTHER_SECRET = "whsec_" + base64.b64encode(bytes(range(1, 33))).decode()
BATCH = "batch_" + "ab" * 12
URL = "http://hooks.example/batches"


def sdk() -> OpenAI:
    return OpenAI(api_key="unused", base_url="http://127.0.0.1:9/v1")


def signed(event: Event, secret: str = SECRET, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    signature = WebhookSecret(secret, "test").sign(event.id, ts, event.body())
    return {"webhook-id": event.id, "webhook-timestamp": str(ts), "webhook-signature": signature}


def test_the_official_sdk_unwraps_what_we_sign_and_refuses_a_wrong_secret() -> None:
    event = Event("evt_" + "1" * 24, "batch.completed", 1_700_000_000, BATCH)
    headers = signed(event)

    unwrapped = sdk().webhooks.unwrap(event.body(), headers, secret=SECRET)

    assert unwrapped.type == "batch.completed" and unwrapped.id == event.id
    assert unwrapped.data.id == BATCH and unwrapped.created_at == 1_700_000_000
    assert json.loads(event.body()) == {
        "id": event.id,
        "object": "event",
        "type": "batch.completed",
        "created_at": 1_700_000_000,
        "data": {"id": BATCH},
    }
    with pytest.raises(openai.InvalidWebhookSignatureError):
        sdk().webhooks.unwrap(event.body(), headers, secret=OTHER_SECRET)
    with pytest.raises(openai.InvalidWebhookSignatureError):
        tampered = event.body().replace(b"completed", b"cancelled")
        sdk().webhooks.unwrap(tampered, headers, secret=SECRET)


@pytest.mark.parametrize(
    "text",
    [
        "abc",  # no prefix
        "whsec_",  # no key
        "whsec_not*base64!",
        "whsec_" + base64.b64encode(b"short").decode(),  # under 24 bytes
        "whsec_" + base64.b64encode(bytes(65)).decode(),  # over 64 bytes
        base64.b64encode(bytes(32)).decode(),  # the key without its prefix
    ],
)
def test_a_malformed_secret_is_refused_in_one_line_that_does_not_show_it(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        WebhookSecret(text, "--webhook-secret-file s.txt")
    message = str(info.value)
    assert message.startswith("--webhook-secret-file s.txt: not a webhook secret")
    shown = text.removeprefix("whsec_")
    assert "\n" not in message and (not shown or shown not in message)


def test_the_options_go_together(tmp_path: Path) -> None:
    limits: dict[str, Any] = {"timeout": 5, "max_attempts": 3, "retry_delay": 1, "max_pending": 9}
    secret_file = tmp_path / "secret"
    secret_file.write_text(SECRET + "\n")

    assert webhook_config(None, None, None, **limits) is None  # off
    config = webhook_config(URL, str(secret_file), None, **limits)
    assert config is not None and config.url == URL and SECRET not in repr(config)
    assert webhook_config(URL, None, SECRET, **limits) is not None  # GPT4BATCH_WEBHOOK_SECRET
    with pytest.raises(ConfigError, match="needs the secret"):
        webhook_config(URL, None, None, **limits)
    with pytest.raises(ConfigError, match="no --webhook-url"):
        webhook_config(None, str(secret_file), None, **limits)
    with pytest.raises(ConfigError, match="not both"):
        webhook_config(URL, str(secret_file), SECRET, **limits)
    with pytest.raises(ConfigError, match="cannot read"):
        webhook_config(URL, str(tmp_path / "missing"), None, **limits)
    for bad in ("ftp://host/x", "hooks.example/x", "http:///x", "http://host:port/x"):
        with pytest.raises(ConfigError, match="--webhook-url"):
            check_url(bad)
    assert redacted_url("https://u:pw@h.example:8443/p?token=t#f") == "https://h.example:8443/p"


def test_retry_delays_double_up_to_a_cap_and_the_defaults_span_about_a_day() -> None:
    assert [retry_delay(k, 5.0) for k in (1, 2, 3, 4)] == [5.0, 10.0, 20.0, 40.0]
    assert retry_delay(30, 5.0) == MAX_RETRY_DELAY
    total = sum(retry_delay(k, 5.0) for k in range(1, 23))  # 23 attempts: 22 waits
    assert 23 * 3600 < total < 26 * 3600


class Receiver:
    """A MockTransport receiver answering with `answers` in turn (the last one repeats)."""

    def __init__(self, *answers: int | Exception, location: str = "") -> None:
        self.answers = list(answers)
        self.location = location
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        headers = {"location": self.location} if self.location else {}
        return httpx.Response(answer, headers=headers, text="x" * 100_000)

    def verified_types(self) -> list[str]:
        return [
            sdk().webhooks.unwrap(r.content, dict(r.headers), secret=SECRET).type
            for r in self.requests
        ]


def config(**overrides: float) -> WebhookConfig:
    values = {"timeout": 5.0, "max_attempts": 5, "retry_delay": 0.01, "max_pending": 100}
    values.update(overrides)
    return WebhookConfig(
        URL,
        WebhookSecret(SECRET, "test"),
        timeout=values["timeout"],
        max_attempts=int(values["max_attempts"]),
        retry_delay=values["retry_delay"],
        max_pending=int(values["max_pending"]),
    )


def hooks(
    folder: Path,
    receiver: Receiver,
    statuses: dict[str, str],
    **overrides: float,
) -> Webhooks:
    return Webhooks(
        config(**overrides),
        folder,
        statuses.get,
        transport=httpx.MockTransport(receiver),
    )


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.01)


def count(outcome: str) -> float:
    return float(WEBHOOKS.labels(outcome)._value.get())


def test_a_failing_receiver_is_retried_until_it_answers_2xx(tmp_path: Path) -> None:
    receiver = Receiver(500, httpx.ConnectError("refused"), 503, 204)
    statuses = {BATCH: "in_progress"}
    before = (count("failed"), count("delivered"))

    async def scenario() -> None:
        webhooks = hooks(tmp_path, receiver, statuses)
        await webhooks.start()
        webhooks.on_status(BATCH, "in_progress")  # not an end: nothing
        webhooks.on_status(BATCH, "completed")  # called before the save…
        assert (tmp_path / f"{BATCH}.json").exists(), "durable before the status is saved"
        statuses[BATCH] = "completed"  # …which follows
        await until(lambda: not (tmp_path / f"{BATCH}.json").exists())
        await webhooks.close()

    asyncio.run(scenario())

    assert receiver.verified_types() == ["batch.completed"] * 4
    assert len({r.headers["webhook-id"] for r in receiver.requests}) == 1  # one event
    assert (count("failed"), count("delivered")) == (before[0] + 3, before[1] + 1)
    assert all(str(r.url) == URL for r in receiver.requests)


def test_a_redirect_is_a_failure_and_never_followed(tmp_path: Path) -> None:
    receiver = Receiver(307, location="http://elsewhere.example/steal")
    statuses = {BATCH: "failed"}

    async def scenario() -> None:
        webhooks = hooks(tmp_path, receiver, statuses, max_attempts=3)
        await webhooks.start()
        webhooks.on_status(BATCH, "failed")
        await until(lambda: not (tmp_path / f"{BATCH}.json").exists())  # gave up
        await webhooks.close()

    before = count("gave_up")
    asyncio.run(scenario())

    assert [str(r.url) for r in receiver.requests] == [URL] * 3
    assert count("gave_up") == before + 1


def test_an_event_waits_for_its_batchs_status_to_be_stored(tmp_path: Path) -> None:
    """A crash between writing the event and saving the status: the batch is resumed and
    not yet cancelled in the store, so the event must not go out before it is."""
    Outbox(tmp_path).save(Event("evt_" + "2" * 24, "batch.cancelled", 1, BATCH))
    receiver = Receiver(200)
    statuses = {BATCH: "cancelling"}

    async def scenario() -> None:
        webhooks = hooks(tmp_path, receiver, statuses)
        await webhooks.start()
        await asyncio.sleep(0.3)
        assert receiver.requests == []
        webhooks.on_status(BATCH, "cancelled")  # the driver gets there again: same event
        statuses[BATCH] = "cancelled"
        await until(lambda: bool(receiver.requests), timeout=30)
        await webhooks.close()

    asyncio.run(scenario())

    assert [r.headers["webhook-id"] for r in receiver.requests] == ["evt_" + "2" * 24]
    assert receiver.verified_types() == ["batch.cancelled"]


def test_attempts_survive_a_restart_and_the_outbox_is_bounded(tmp_path: Path) -> None:
    receiver = Receiver(500)
    other = "batch_" + "cd" * 12
    statuses = {BATCH: "completed", other: "completed"}
    dropped = count("dropped")

    async def first_run() -> None:
        webhooks = hooks(tmp_path, receiver, statuses, retry_delay=3600, max_pending=1)
        await webhooks.start()
        webhooks.on_status(BATCH, "completed")
        webhooks.on_status(other, "completed")  # over --webhook-max-pending
        await until(lambda: len(receiver.requests) == 1)
        await until(lambda: Outbox(tmp_path).load()[0].attempts == 1)
        await webhooks.close()

    asyncio.run(first_run())
    assert count("dropped") == dropped + 1
    [kept] = Outbox(tmp_path).load()
    assert (kept.batch, kept.attempts) == (BATCH, 1) and kept.next_at > time.time() + 3000

    async def second_run() -> None:  # the saved wait is honoured: no attempt before it
        webhooks = hooks(tmp_path, receiver, statuses)
        await webhooks.start()
        await asyncio.sleep(0.3)
        await webhooks.close()

    asyncio.run(second_run())
    assert len(receiver.requests) == 1


def test_without_a_url_the_outbox_is_kept_and_nothing_is_sent(tmp_path: Path) -> None:
    Outbox(tmp_path).save(Event("evt_" + "3" * 24, "batch.failed", 1, BATCH))
    webhooks = Webhooks(None, tmp_path, {BATCH: "failed"}.get)

    async def scenario() -> None:
        await webhooks.start()
        webhooks.on_status("batch_" + "ef" * 12, "completed")
        await webhooks.close()

    asyncio.run(scenario())
    assert sorted(os.listdir(tmp_path)) == [f"{BATCH}.json"]


def test_a_receiver_that_never_answers_costs_one_timeout_per_attempt(tmp_path: Path) -> None:
    calls: list[float] = []

    async def hanging_then_ok(request: httpx.Request) -> httpx.Response:
        calls.append(time.monotonic())
        if len(calls) == 1:
            await asyncio.sleep(3600)
        return httpx.Response(200)

    async def scenario() -> None:
        webhooks = Webhooks(
            config(timeout=0.2),
            tmp_path,
            {BATCH: "expired"}.get,
            transport=httpx.MockTransport(hanging_then_ok),
        )
        await webhooks.start()
        webhooks.on_status(BATCH, "expired")
        await until(lambda: not (tmp_path / f"{BATCH}.json").exists())
        await webhooks.close()

    failed = count("failed")
    asyncio.run(scenario())
    assert len(calls) == 2 and count("failed") == failed + 1


def test_a_failing_outbox_or_store_does_not_stop_the_sender(tmp_path: Path) -> None:
    receiver = Receiver(200)
    looks: list[str] = []

    def flaky_status(batch_id: str) -> str | None:
        looks.append(batch_id)
        if len(looks) == 1:
            raise OSError(28, "No space left on device")
        return "completed"

    async def scenario() -> None:
        webhooks = Webhooks(
            config(), tmp_path, flaky_status, transport=httpx.MockTransport(receiver)
        )
        await webhooks.start()
        webhooks.on_status(BATCH, "completed")
        await until(lambda: bool(receiver.requests), timeout=30)
        await webhooks.close()

    asyncio.run(scenario())
    assert receiver.verified_types() == ["batch.completed"] and len(looks) == 2
