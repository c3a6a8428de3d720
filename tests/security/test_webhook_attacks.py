"""Attacks on the gateway's webhooks, replayed against a running gateway over real nsqd: a
receiver redirecting the events elsewhere, the signing secret on the command line or in a
file other users can read (issue 22, item 5)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.gateway.test_openai_sdk import (
    TERMINAL,
    Gateway,
    create,
    jsonl,
    upload,
    wait_status,
)
from tests.support.pipeline import ServiceProcs, wait_for
from tests.support.webhook_receiver import WebhookReceiver

SECRET = "whsec_" + base64.b64encode(b"webhook-attack-test-secret-32byt").decode()


@pytest.fixture
def thief() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as server:
        yield server


def hook_events(procs: ServiceProcs) -> list[dict[str, str]]:
    return [e for e in procs.log_events("gateway") if "webhook" in e.get("event", "")]


def test_a_redirecting_receiver_cannot_send_the_events_elsewhere(
    procs: ServiceProcs, tmp_path: Path, thief: WebhookReceiver
) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o600)
    with WebhookReceiver(failing=True, fail_code=307, answer_headers={"Location": thief.url}) as rx:
        flags = ["--webhook-url", rx.url, "--webhook-secret-file", str(secret)]
        flags += ["--webhook-retry-delay", "0.1", "--webhook-max-attempts", "3"]
        gateway = Gateway(procs, tmp_path / "gw", *flags).start()
        client = gateway.client()
        batch = create(client, upload(client, jsonl(["{not json"])))  # fails at validating
        assert wait_status(client, batch.id, TERMINAL, procs, 30).status == "failed"

        def given_up() -> bool:
            return any(e["event"].endswith("attempts ran out") for e in hook_events(procs))

        wait_for(given_up, 60, "the gateway to give up", procs.assert_alive)
        assert len(rx.deliveries()) == 3

    assert thief.deliveries() == [], "the redirect was followed"
    failures = [e for e in hook_events(procs) if e["event"].startswith("webhook attempt failed")]
    assert [e["error"] for e in failures] == ["HTTP 307", "HTTP 307"]


def test_the_secret_on_the_command_line_is_warned_about_and_never_logged(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    with WebhookReceiver() as rx:
        flags = ["--webhook-url", rx.url, "--webhook-secret", SECRET]
        Gateway(procs, tmp_path / "gw", *flags).start()

    text = (procs.logs / "gateway.log").read_text()
    warned = [line for line in text.splitlines() if "warning: --webhook-secret " in line]
    assert len(warned) == 1 and "--webhook-secret-file" in warned[0], text[-2000:]
    assert SECRET not in text and SECRET.removeprefix("whsec_") not in text
    assert any(e.get("event") == "webhooks on" for e in hook_events(procs))


def test_a_secret_file_others_can_read_is_warned_about(procs: ServiceProcs, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text(SECRET)
    secret.chmod(0o644)
    with WebhookReceiver() as rx:
        flags = ["--webhook-url", rx.url, "--webhook-secret-file", str(secret)]
        Gateway(procs, tmp_path / "gw", *flags).start()

    events = procs.log_events("gateway")
    warned = [e for e in events if e.get("event", "").startswith("the webhook secret file")]
    assert len(warned) == 1 and warned[0]["file"] == str(secret)
    assert SECRET not in (procs.logs / "gateway.log").read_text()
