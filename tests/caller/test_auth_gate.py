"""A refused token stops the caller service (RDY 0) instead of failing every ask, on real
nsqd: no result is published, the metric and /ready say so, and a fixed token resumes."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY

from gpt4batch.common.bus import Delivery
from gpt4batch.common.messages import AskMessage, IErr, Record, ResultMessage
from gpt4batch.common.metrics import serve_metrics
from gpt4batch.common.nsq.bus import NsqBus
from gpt4batch.services.caller.auth_gate import AuthGate
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings
from tests.support.mock_upstream import MockUpstream
from tests.support.nsq_servers import Nsqd, free_port


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "5") as server:
        yield server


def _refused() -> float:
    return REGISTRY.get_sample_value("gpt4batch_caller_auth_refused") or 0.0


def test_gate_admits_one_probe_at_a_time_and_reopens() -> None:
    closes: list[int] = []
    gate = AuthGate("x", retry_interval=0, on_close=lambda e: closes.append(e.code))
    assert gate.admits() and gate.readiness() is None
    assert gate.observe(401, IErr(code=401, message="no")) is True
    assert (
        _refused() == 1
        and not gate.admits()
        and "refused the token from x" in (gate.readiness() or "")
    )
    gate.probing = True
    assert gate.admits() and not gate.admits()  # one probe only
    assert gate.observe(429, IErr(code=429, message="busy")) is False  # not an auth answer: reopen
    assert gate.is_open and _refused() == 0 and closes == [401]


def test_an_unproven_token_lets_one_conversation_call_first() -> None:
    """Issue 23: the others wait for the first's outcome; a connection failure (no answer)
    hands the proof to the next; an answer proves the token and lets all go at once."""
    gate = AuthGate("x", retry_interval=0, prove_first=True)
    calling: list[int] = []
    outcomes = iter([(597, False), (None, True)])  # no answer, then an answer

    async def conversation(n: int) -> None:
        async with gate.turn():
            calling.append(n)
            if len(calling) <= 2:
                await asyncio.sleep(0.05)
                status, ok = next(outcomes)
                gate.observe(status, None if ok else IErr(code=597, message="refused"))

    async def go() -> None:
        tasks = [asyncio.create_task(conversation(n)) for n in range(5)]
        await asyncio.sleep(0.02)
        assert calling == [0]  # the proof alone
        await asyncio.sleep(0.05)
        assert calling == [0, 1]  # no answer: the next one is the proof
        await asyncio.gather(*tasks)

    asyncio.run(go())
    assert gate.proven and sorted(calling) == list(range(5))


def test_a_refused_proof_releases_the_waiters_to_be_refused() -> None:
    gate = AuthGate("x", retry_interval=0, prove_first=True)
    admitted: list[bool] = []

    async def conversation(first: bool) -> None:
        async with gate.turn():
            admitted.append(gate.admits())
            if first:
                gate.observe(401, IErr(code=401, message="no"))

    async def go() -> None:
        await asyncio.gather(conversation(True), *(conversation(False) for _ in range(3)))

    asyncio.run(go())
    assert admitted == [True, False, False, False] and not gate.proven


def test_refused_token_pauses_the_caller_until_a_good_token_arrives(
    mock: MockUpstream, nsqd: Nsqd, topic_prefix: str, tmp_path: Path
) -> None:
    creds = tmp_path / "creds.pub"
    creds.write_text(json.dumps({"access_token": "sk-wrong"}))
    port = free_port()
    serve_metrics(port, "127.0.0.1")
    settings = CallerSettings(
        base_url=mock.url,
        credentials=creds,
        qps=0,
        concurrency=4,
        nsqd_tcp_address=[nsqd.tcp_address],
        topic_prefix=topic_prefix,
        auth_retry_interval=1.0,
    )
    n = 12

    async def scenario() -> list[ResultMessage]:
        service = CallerService(settings)
        bus = NsqBus(settings, service="caller")
        results: list[ResultMessage] = []

        async def collect(msg: ResultMessage, delivery: Delivery) -> None:
            results.append(msg)

        await service.start()
        service.register(bus)
        bus.subscribe(bus.topics.results, "sink", ResultMessage, collect)
        await bus.start()
        asks = [
            AskMessage(
                batch="b",
                seq=i,
                record=Record.model_validate(
                    {"id": f"r{i}", "asks": [{"id": "a", "content": f"hi {i}"}]}
                ),
            )
            for i in range(n)
        ]
        await bus.publish_many(bus.topics.asks, asks)
        before = mock.stats()["total_calls"]
        for _ in range(100):
            if _refused() == 1:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        assert _refused() == 1
        ready = httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5)
        assert ready.status_code == 503 and "refused the token" in ready.text
        assert results == []  # a refusal is no result
        calls_while_closed = mock.stats()["total_calls"] - before
        assert calls_while_closed <= 4 + 1  # the asks in flight, then at most one probe
        creds.write_text(json.dumps({"access_token": mock.token}))  # `gpt4batch auth` again
        for _ in range(200):
            if len({r.seq for r in results}) >= n:
                break
            await asyncio.sleep(0.05)
        assert httpx.get(f"http://127.0.0.1:{port}/ready", timeout=5).status_code == 200
        await bus.stop(grace=2)
        await service.close()
        return results

    results = asyncio.run(scenario())
    assert {r.seq for r in results} == set(range(n))
    assert all(r.record.iErr is None for r in results)
    assert _refused() == 0
