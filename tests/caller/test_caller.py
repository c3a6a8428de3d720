"""The caller's logic against the simulator (a real HTTP server process), without NSQ."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from gpt4batch.common.bus import Delivery
from gpt4batch.common.errors import FinalError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import (
    Ask,
    AskMessage,
    AskOverrides,
    DownloadJob,
    Record,
    ResultMessage,
)
from gpt4batch.common.retry import RetryPolicy
from gpt4batch.common.topics import Topics
from gpt4batch.common.upstreams import ConversationState
from gpt4batch.services.caller.conversation import ConversationRunner
from gpt4batch.services.caller.limits import Limiter, LimitSettings, ProcessLimiter
from gpt4batch.services.caller.pacer import Pacing
from gpt4batch.services.caller.service import CallerService
from gpt4batch.services.caller.settings import CallerSettings
from tests.support.mock_upstream import MockUpstream

DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(scope="module")
def mock() -> Iterator[MockUpstream]:
    with MockUpstream("--seed", "3") as server:
        yield server


def settings_for(mock: MockUpstream, **kw: Any) -> CallerSettings:
    values: dict[str, Any] = dict(
        base_url=mock.url,
        access_token=SecretStr(mock.token),
        qps=0,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        allowed_dirs=[str(DATA)],
    )
    values.update(kw)
    return CallerSettings(**values)


def ask_message(record: dict[str, Any], seq: int = 0, **kw: Any) -> AskMessage:
    return AskMessage(
        batch="b", seq=seq, record=Record.model_validate(record), base_dir=str(DATA), **kw
    )


def run_service(
    settings: CallerSettings, messages: list[AskMessage], limiter: Limiter | None = None
) -> MemoryBus:
    """Feed messages through CallerService on a MemoryBus; return the bus with what it got."""

    async def scenario() -> MemoryBus:
        bus = MemoryBus(topics=Topics("t"), record=True)
        service = CallerService(settings, limiter=limiter)
        await service.start()
        service.register(bus)
        results: list[ResultMessage] = []

        async def collect(msg: ResultMessage, delivery: Delivery) -> None:
            results.append(msg)

        bus.subscribe(bus.topics.results, "sink", ResultMessage, collect)
        await bus.start()
        await bus.publish_many(bus.topics.asks, messages)
        while len(results) < len(messages):
            await asyncio.sleep(0.01)
        await bus.stop(grace=1)
        await service.close()
        return bus

    return asyncio.run(asyncio.wait_for(scenario(), 60))


def results_of(bus: MemoryBus) -> dict[str, ResultMessage]:
    out = [ResultMessage.model_validate_json(b) for b in bus.published[bus.topics.results]]
    return {r.record.id: r for r in out}


def test_multi_turn_record_with_image_and_file_chains_on_the_simulator(
    mock: MockUpstream,
) -> None:
    before = mock.stats()
    record = {
        "id": "r1",
        "asks": [
            {"id": "a1", "content": "describe the picture", "images": ["1.jpeg"]},
            {"id": "a2", "content": "and this file", "files": ["example.txt"]},
            {"id": "a3", "content": "summarise both"},
        ],
        "extra": {"keep": True},
    }
    bus = run_service(settings_for(mock), [ask_message(record)])
    result = results_of(bus)["r1"]
    after = mock.stats()
    assert result.record.iErr is None
    assert [a.message_id is not None for a in result.record.answers or []] == [True] * 3
    assert after["chain_errors"] == before["chain_errors"]
    uploads = after["calls"].get("uploaded", 0) - before["calls"].get("uploaded", 0)
    assert uploads == 2  # each ask uploads only its own files
    assert result.record.extra == {"keep": True}


def test_gizmo_override_goes_to_the_gizmos_endpoint(mock: MockUpstream) -> None:
    before = mock.stats()["calls"].get("gizmos", 0)
    msg = ask_message(
        {"id": "g1", "asks": [{"id": "a", "content": "1+2+...+100=?"}]},
        overrides=AskOverrides(gizmo_id="g-HMNcP6w7d", model="gpt-4-gizmo"),
    )
    result = results_of(run_service(settings_for(mock), [msg]))["g1"]
    assert result.record.iErr is None
    assert mock.stats()["calls"].get("gizmos", 0) == before + 1


def test_pictures_become_download_jobs_and_spec_downloads(mock: MockUpstream) -> None:
    msg = ask_message({"id": "id: 9", "asks": [{"id": "pid: 0", "content": "draw a cat"}]})
    bus = run_service(settings_for(mock, download_prefix="PFX"), [msg])
    jobs = [DownloadJob.model_validate_json(b) for b in bus.published[bus.topics.downloads]]
    answer = results_of(bus)["id: 9"].record.answers[0]  # type: ignore[index]
    assert jobs and all(j.local.startswith("PFX_id_9_pid_0_") for j in jobs)
    assert [s.local for s in answer.spec_downloads or []] == [j.local for j in jobs]
    assert [s.origin for s in answer.spec_downloads or []] == answer.downloads


def test_transient_faults_are_retried_until_the_record_succeeds() -> None:
    with MockUpstream("--seed", "11", "--fault-5xx", "0.3", "--fault-bad-json", "0.1") as mock:
        messages = [
            ask_message({"id": f"r{i}", "asks": [{"id": "a", "content": "hi"}]}, seq=i)
            for i in range(20)
        ]
        results = results_of(run_service(settings_for(mock, retries=10), messages))
    assert len(results) == 20
    assert all(r.record.iErr is None for r in results.values())


def test_final_error_records_the_status_and_keeps_earlier_answers() -> None:
    class FailsOnSecondAsk:
        kind = "fake"

        async def run_ask(
            self, state: ConversationState, ask: Ask, **_: Any
        ) -> tuple[dict[str, Any], ConversationState]:
            if ask.id == "a2":
                raise FinalError(403, "forbidden")
            return {"message_id": f"m-{ask.id}"}, state

    runner = ConversationRunner(
        client_for=lambda kind: FailsOnSecondAsk(), default_kind="fake", policy=RetryPolicy()
    )
    msg = ask_message({"id": "r", "asks": [{"id": f"a{i}", "content": "q"} for i in (1, 2, 3)]})
    outcome = asyncio.run(runner.run(msg))
    assert [a.message_id for a in outcome.record.answers or []] == ["m-a1"]
    assert outcome.record.iErr is not None
    assert outcome.record.iErr.code == 403
    assert "a2" in outcome.record.iErr.message


class StampedLimiter(ProcessLimiter):
    """The caller's own limiter, noting when each call it lets go is handed to HTTP."""

    def __init__(self, qps: float, concurrency: int, pacing: Pacing = "grid") -> None:
        super().__init__(LimitSettings(qps, concurrency, pacing=pacing))
        self.starts: list[float] = []

    async def acquire(self, endpoint: str = "") -> None:
        await super().acquire(endpoint)
        self.starts.append(time.monotonic())


def test_qps_limit_holds_across_uploads_and_chats() -> None:
    """6 conversations of 3 calls, 60 concurrent slots, 4 calls/s: never 5 starts in 1 s."""
    with MockUpstream() as mock:
        messages = [
            ask_message(
                {
                    "id": f"r{i}",
                    "asks": [
                        {"id": "a1", "content": "look", "images": ["1.jpeg"]},
                        {"id": "a2", "content": "again"},
                    ],
                },
                seq=i,
            )
            for i in range(6)
        ]
        limiter = StampedLimiter(4, 60)
        settings = settings_for(mock, qps=4, concurrency=60)
        results = results_of(run_service(settings, messages, limiter))
        stats = mock.stats()
    assert all(r.record.iErr is None for r in results.values())
    assert stats["total_calls"] == len(limiter.starts) == 18
    starts = sorted(limiter.starts)
    assert min(b - a for a, b in zip(starts, starts[4:], strict=False)) > 1.0
    # The simulator's stamps move with its process's stalls (see the test below).
    assert stats["max_calls_in_1s"] <= 4 + 1


@pytest.mark.parametrize("pacing", ["grid", "window"])
def test_never_above_q_in_any_second(pacing: Pacing) -> None:
    """40 one-ask records, 40 in flight, -q 8, either pacing: never 9 starts in 1 s.

    The bound holds at our clock, where the limiter hands each call to HTTP. The simulator
    stamps a call when its loop reads it: a stall of its process on a busy machine (longer
    than the 10-ms allowance) crowds a call or two more into its second, more often for a
    burst (window pacing) than for one call per slot. Without the limiter it would see 40.
    """
    limiter = StampedLimiter(8, 40, pacing)
    with MockUpstream() as mock:
        messages = [ask_message({"id": f"r{i}", "asks": [{"id": "a", "content": "q"}]}, seq=i)
                    for i in range(40)]  # fmt: skip
        settings = settings_for(mock, qps=8, concurrency=40, pacing=pacing)
        results = results_of(run_service(settings, messages, limiter))
        stats = mock.stats()
    assert len(results) == 40 and all(r.record.iErr is None for r in results.values()), stats
    assert stats["total_calls"] == len(limiter.starts) == 40
    starts = sorted(limiter.starts)
    assert min(b - a for a, b in zip(starts, starts[8:], strict=False)) > 1.0
    assert stats["max_calls_in_1s"] <= 8 + 2, stats


def test_missing_token_is_a_clear_error_before_any_work(tmp_path: Path) -> None:
    from gpt4batch.common.errors import ConfigError

    settings = CallerSettings(credentials=tmp_path / "nope.pub")
    with pytest.raises(ConfigError, match="no access token"):
        CallerService(settings)


def test_token_never_appears_in_a_failed_record(tmp_path: Path) -> None:
    with MockUpstream(token="the-real-secret-token") as mock:
        settings = settings_for(mock, access_token=SecretStr("wrong-secret-token-123"))
        msg = ask_message({"id": "r", "asks": [{"id": "a", "content": "hi"}]})

        async def scenario() -> Record:
            # The conversation's own record (the service requeues a 401: see test_auth_gate).
            service = CallerService(settings)
            await service.start()
            try:
                return (await service.runner.run(msg)).record
            finally:
                await service.close()

        record = asyncio.run(scenario())
    assert record.iErr is not None and record.iErr.code == 401
    line = record.to_line()
    assert "wrong-secret-token-123" not in line and "the-real-secret-token" not in line


def test_http_client_is_shared_per_process(mock: MockUpstream) -> None:
    async def scenario() -> None:
        service = CallerService(settings_for(mock))
        await service.start()
        assert service.client_for("gpt4api") is service.client_for("gpt4api")
        openai = service.client_for("openai")
        assert openai.http is service.client_for("gpt4api").http  # type: ignore[attr-defined]
        assert isinstance(openai.http, httpx.AsyncClient)  # type: ignore[attr-defined]
        await service.close()

    asyncio.run(scenario())


def test_a_paid_result_is_republished_not_paid_again_while_nsqd_is_down(
    mock: MockUpstream,
) -> None:
    """Publishing fails twice (nsqd away): the caller retries the publish, not the calls."""
    from gpt4batch.common.errors import PublishError

    class FlakyBus(MemoryBus):
        failures = 2

        async def _publish(self, topic: str, bodies: list[bytes]) -> None:
            if topic == self.topics.results and self.failures:
                self.failures -= 1
                raise PublishError("nsqd went away")
            await super()._publish(topic, bodies)

    async def scenario() -> tuple[list[bytes], int]:
        bus = FlakyBus(topics=Topics("t"), record=True)
        service = CallerService(settings_for(mock))
        await service.start()
        service.register(bus)
        before = mock.stats()["total_calls"]
        msg = ask_message({"id": "p", "asks": [{"id": "a", "content": "hi"}]})

        class Once:
            id, attempts = "m1", 1

            def touch(self) -> None: ...

        await service.handle(msg, Once())
        await service.close()
        return bus.published[bus.topics.results], mock.stats()["total_calls"] - before

    published, calls = asyncio.run(scenario())
    assert len(published) == 1
    assert calls == 1


def test_paths_outside_the_allowed_folders_are_refused_before_any_call(
    mock: MockUpstream, tmp_path: Path
) -> None:
    secret = tmp_path / "creds.pub"
    secret.write_text('{"access_token": "x"}')
    settings = settings_for(mock, allowed_dirs=[str(DATA)], credentials=secret)
    inside = ask_message({"id": "in", "asks": [{"id": "a", "content": "c", "images": ["1.jpeg"]}]})
    outside = ask_message(
        {"id": "out", "asks": [{"id": "a", "content": "c", "files": ["/etc/hostname"]}]}, seq=1
    )
    sneaky = ask_message(
        {"id": "up", "asks": [{"id": "a", "content": "c", "files": ["../../../etc/hostname"]}]},
        seq=2,
    )
    before = mock.stats()["total_calls"]
    results = results_of(run_service(settings, [inside, outside, sneaky]))
    assert results["in"].record.iErr is None
    for rid in ("out", "up"):
        err = results[rid].record.iErr
        assert err is not None and err.code == 591 and "outside the allowed folders" in err.message
    assert mock.stats()["total_calls"] - before == 2  # the allowed record's upload + chat only

    # The credentials file never leaves, even from an allowed folder.
    open_settings = settings_for(mock, credentials=secret, allowed_dirs=[str(tmp_path)])
    leak = ask_message(
        {"id": "leak", "asks": [{"id": "a", "content": "c", "files": [str(secret)]}]}
    )
    err = results_of(run_service(open_settings, [leak]))["leak"].record.iErr
    assert err is not None and "credentials file" in err.message


def test_uploads_are_refused_by_default_and_symlinks_are_resolved_first(
    mock: MockUpstream, tmp_path: Path
) -> None:
    """No --allowed-dirs: nothing is uploaded; a link inside an allowed folder that points
    outside it is refused; /proc/self/environ (the caller's token) never leaves."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    (allowed / "ok.txt").write_text("fine")
    (allowed / "link.txt").symlink_to("/etc/hostname")
    (allowed / "env.txt").symlink_to("/proc/self/environ")

    def files(rid: str, path: str, seq: int) -> AskMessage:
        record = {"id": rid, "asks": [{"id": "a", "content": "c", "files": [path]}]}
        return AskMessage(
            batch="b", seq=seq, record=Record.model_validate(record), base_dir=str(allowed)
        )

    before = mock.stats()["total_calls"]
    closed = results_of(
        run_service(settings_for(mock, allowed_dirs=[]), [files("ok", "ok.txt", 0)])
    )
    err = closed["ok"].record.iErr
    assert err is not None and err.code == 591 and "no folder is allowed" in err.message
    assert mock.stats()["total_calls"] == before

    wide = settings_for(mock, allowed_dirs=[str(allowed), "/"])
    narrow = settings_for(mock, allowed_dirs=[str(allowed)])
    got = results_of(run_service(narrow, [files("ok", "ok.txt", 0), files("link", "link.txt", 1)]))
    assert got["ok"].record.iErr is None
    link_err = got["link"].record.iErr
    assert link_err is not None and "outside the allowed folders" in link_err.message
    for path in ("/proc/self/environ", "env.txt"):
        env_err = results_of(run_service(wide, [files("env", path, 0)]))["env"].record.iErr
        assert env_err is not None and env_err.code == 591 and "system folder" in env_err.message
    assert mock.stats()["total_calls"] - before == 2  # ok.txt: one upload, one chat
