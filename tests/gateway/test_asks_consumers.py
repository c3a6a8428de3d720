"""A gateway with no caller says so (issue 19 item 6): once in its log, in a gauge and
on /ready, over real nsqd; and it takes it back when a caller comes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.gateway.test_openai_sdk import Gateway, start_caller
from tests.support.mock_upstream import MockUpstream
from tests.support.pipeline import ServiceProcs, wait_for


def gauge(text: str) -> float | None:
    for line in text.splitlines():
        if line.startswith("gpt4batch_gateway_asks_consumers "):
            return float(line.split()[1])
    return None


def test_no_consumer_on_the_asks_topic_is_logged_once_and_not_ready(
    procs: ServiceProcs, tmp_path: Path
) -> None:
    Gateway(procs, tmp_path / "gw", "--consumer-check-interval", "0.3").start()
    base = f"http://127.0.0.1:{procs.metrics_ports['gateway']}"

    def not_ready() -> bool:
        return httpx.get(f"{base}/ready").status_code == 503

    wait_for(not_ready, 30, "/ready to say no caller", procs.assert_alive)
    ready = httpx.get(f"{base}/ready")
    assert ".asks" in ready.text and "caller" in ready.text
    assert gauge(httpx.get(f"{base}/metrics").text) == 0
    time.sleep(1.5)  # several more checks: still one line
    events = [e["event"] for e in procs.log_events("gateway")]
    assert sum("nothing consumes the asks topic" in e for e in events) == 1

    with MockUpstream("--seed", "1") as mock:
        start_caller(procs, mock)
        wait_for(
            lambda: httpx.get(f"{base}/ready").status_code == 200,
            30,
            "/ready once a caller consumes",
            procs.assert_alive,
        )
        assert (gauge(httpx.get(f"{base}/metrics").text) or 0) >= 1
        events = [e["event"] for e in procs.log_events("gateway")]
        assert sum("has consumers again" in e for e in events) == 1
        procs.stop("caller")
