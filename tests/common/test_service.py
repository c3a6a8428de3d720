"""The app runner: parts, the main job, signals and exit codes (on the in-memory bus)."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from typing import Any

import httpx
import pytest

from gpt4batch.common import logging as glog
from gpt4batch.common.bus import Bus, Delivery
from gpt4batch.common.errors import ConfigError
from gpt4batch.common.memory_bus import MemoryBus
from gpt4batch.common.messages import BatchManifest
from gpt4batch.common.service import (
    EVENT_LOOP_ENV,
    EXIT_ABORTED,
    EXIT_OK,
    EXIT_USAGE,
    GC_YOUNG_THRESHOLD,
    App,
    HttpServer,
    freeze_start_up,
    host,
    install_stop_signals,
    run_app,
    run_process,
    stop_bus,
)
from gpt4batch.common.settings import BaseServiceSettings


class Recorder:
    """A consumer part that notes its lifecycle and what it received."""

    name = "recorder"

    def __init__(self, events: list[str]) -> None:
        self.events = events
        self.seen: list[BatchManifest] = []

    async def start(self) -> None:
        self.events.append("start recorder")

    def register(self, bus: Bus) -> None:
        self.events.append("register")
        bus.subscribe(bus.topics.batches, "test", BatchManifest, self.handle)

    async def handle(self, msg: BatchManifest, delivery: Delivery) -> None:
        self.seen.append(msg)

    async def close(self) -> None:
        self.events.append("close recorder")


class Plain:
    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def start(self) -> None:
        self.events.append("start plain")

    async def close(self) -> None:
        self.events.append("close plain")


def test_a_producer_and_a_consumer_share_the_bus_and_close_in_reverse() -> None:
    asyncio.run(_test_a_producer_and_a_consumer_share_the_bus_and_close_in_reverse())


async def _test_a_producer_and_a_consumer_share_the_bus_and_close_in_reverse() -> None:
    events: list[str] = []
    recorder = Recorder(events)

    async def produce(bus: Bus, stop: asyncio.Event) -> int:
        await bus.publish(bus.topics.batches, BatchManifest(batch="b", total=3))
        for _ in range(100):
            if recorder.seen:
                return 7
            await asyncio.sleep(0.01)
        return 1

    app = App(parts=[recorder, Plain(events)], main=produce)
    code = await host(app, MemoryBus(), asyncio.Event(), grace=1)

    assert code == 7 and recorder.seen[0].total == 3
    assert events == [
        "start recorder",
        "register",
        "start plain",
        "close plain",
        "close recorder",
    ]


def test_a_signalled_job_gets_its_grace_then_is_cancelled() -> None:
    asyncio.run(_test_a_signalled_job_gets_its_grace_then_is_cancelled())


async def _test_a_signalled_job_gets_its_grace_then_is_cancelled() -> None:
    stop = asyncio.Event()
    ended: list[str] = []

    async def watches_stop(bus: Bus, stop: asyncio.Event) -> int:
        await stop.wait()
        ended.append("by itself")
        return EXIT_OK

    async def ignores_stop(bus: Bus, stop: asyncio.Event) -> int:
        try:
            await asyncio.sleep(60)
        finally:
            ended.append("cancelled")
        return EXIT_OK

    asyncio.get_running_loop().call_later(0.05, stop.set)
    assert await host(App(main=watches_stop), MemoryBus(), stop, grace=5) == EXIT_OK
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stop.set)
    quick = App(main=ignores_stop, main_grace=0)
    assert await host(quick, MemoryBus(), stop, grace=30) == EXIT_ABORTED
    assert ended == ["by itself", "cancelled"]


def test_a_stop_order_runs_in_order_before_the_parts_close() -> None:
    asyncio.run(_test_a_stop_order_runs_in_order_before_the_parts_close())


async def _test_a_stop_order_runs_in_order_before_the_parts_close() -> None:
    """`run`'s staged shutdown is an `App.stop_order`: its stages run in order, on the
    started bus, after the main job and before the parts close; the bus stops where
    `stop_bus` stands in the order."""
    events: list[str] = []
    recorder = Recorder(events)

    class NotedBus(MemoryBus):
        async def stop(self, grace: float = 30.0) -> None:
            events.append("bus stopped")
            await super().stop(grace)

    bus = NotedBus()

    def stage(name: str) -> Any:
        async def run(stopping: Bus) -> None:
            assert stopping is bus
            events.append(name)

        return run

    async def job(bus: Bus, stop: asyncio.Event) -> int:
        events.append("job")
        return EXIT_OK

    order = [stage("first"), stage("second"), stop_bus(1), stage("after the bus")]
    app = App(parts=[recorder], main=job, stop_order=order)
    assert await host(app, bus, asyncio.Event(), grace=1) == EXIT_OK
    assert events == [
        "start recorder",
        "register",
        "job",
        "first",
        "second",
        "bus stopped",
        "after the bus",
        "close recorder",
    ]


def test_a_stop_order_waits_for_the_bus_and_a_failing_stage_still_closes_the_parts() -> None:
    asyncio.run(_test_a_stop_order_waits_for_the_bus_and_a_failing_stage_still_closes_the_parts())


async def _test_a_stop_order_waits_for_the_bus_and_a_failing_stage_still_closes_the_parts() -> None:
    events: list[str] = []

    async def never(bus: Bus) -> None:
        events.append("stage")

    class Unreachable(MemoryBus):  # nsqd not there yet: start waits for it
        async def start(self) -> None:
            await asyncio.Event().wait()

    stopped = asyncio.Event()
    asyncio.get_running_loop().call_later(0.05, stopped.set)
    app = App(parts=[Plain(events)], main=None, stop_order=[never])
    # Stopped before the bus started: nothing to drain, the stop order is not run.
    assert await host(app, Unreachable(), stopped, grace=1) == EXIT_OK
    assert events == ["start plain", "close plain"]

    async def fails(bus: Bus) -> None:
        raise RuntimeError("stage failed")

    async def job(bus: Bus, stop: asyncio.Event) -> int:
        return EXIT_OK

    events.clear()
    app = App(parts=[Plain(events)], main=job, stop_order=[fails, never])
    with pytest.raises(RuntimeError, match="stage failed"):
        await host(app, MemoryBus(), asyncio.Event(), grace=1)
    assert events == ["start plain", "close plain"]


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_first_signal_stops_second_aborts(loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, loop)
    calls: list[str] = []

    async def main() -> None:
        stop = asyncio.Event()
        install_stop_signals(
            stop, on_stop=lambda: calls.append("stop"), on_abort=lambda: calls.append("abort")
        )
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(stop.wait(), 5)
        assert calls == ["stop"]
        os.kill(os.getpid(), signal.SIGINT)
        await asyncio.sleep(5)

    with pytest.raises(SystemExit) as info:
        run_process(main)  # type: ignore[arg-type]
    assert info.value.code == EXIT_ABORTED and calls == ["stop", "abort"]


@pytest.mark.parametrize(
    ("setting", "expected"), [(None, "uvloop"), ("uvloop", "uvloop"), (" AsyncIO", "asyncio")]
)
def test_processes_run_on_uvloop_unless_told_asyncio(
    setting: str | None, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if setting is None:
        monkeypatch.delenv(EVENT_LOOP_ENV, raising=False)
    else:
        monkeypatch.setenv(EVENT_LOOP_ENV, setting)
    seen: list[str] = []

    async def main() -> int:
        seen.append(type(asyncio.get_running_loop()).__module__.split(".")[0])
        return 7

    assert run_process(main) == 7
    assert seen == [expected]


def test_an_unknown_event_loop_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(EVENT_LOOP_ENV, "trio")

    async def main() -> int:
        raise AssertionError("must not run")

    assert run_process(main) == EXIT_USAGE
    assert capsys.readouterr().err.strip() == (
        "gpt4batch: error: GPT4BATCH_EVENT_LOOP: unknown event loop 'trio' (uvloop or asyncio)"
    )


def test_an_http_part_serves_on_a_free_port() -> None:
    asyncio.run(_test_an_http_part_serves_on_a_free_port())


async def _test_an_http_part_serves_on_a_free_port() -> None:
    from tornado.web import Application, RequestHandler

    class Hello(RequestHandler):
        def get(self) -> None:
            self.write("hello")

    server = HttpServer(Application([(r"/", Hello)]), 0, "127.0.0.1")

    async def ask(bus: Bus, stop: asyncio.Event) -> int:
        async with httpx.AsyncClient() as client:
            resp = await client.get(f"http://127.0.0.1:{server.port}/")
        return EXIT_OK if resp.text == "hello" else 1

    assert await host(App(parts=[server], main=ask), MemoryBus(), asyncio.Event(), 1) == EXIT_OK
    assert server.port > 0


def test_a_port_in_use_is_a_config_error_naming_the_address() -> None:
    async def bind_twice() -> None:
        first = HttpServer(object(), 0, "127.0.0.1")
        await first.start()
        try:
            with pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{first.port}"):
                await HttpServer(object(), first.port, "127.0.0.1").start()
        finally:
            await first.close()

    asyncio.run(bind_twice())


def test_a_config_error_while_building_is_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Logging set up to pytest's captured stderr would outlive this test.
    monkeypatch.setattr(glog, "configure", lambda *args, **kwargs: None)

    def build(settings: Any) -> App:
        raise ConfigError("--thing: not good")

    code = run_app(
        "test", "a test", BaseServiceSettings, build, ["--nsqd-tcp-address", "127.0.0.1:1"]
    )
    assert code == EXIT_USAGE
    assert capsys.readouterr().err.strip() == "gpt4batch test: error: --thing: not good"


def test_a_process_runs_with_its_start_up_frozen_and_fewer_young_collections() -> None:
    before = (gc.get_threshold(), gc.get_freeze_count())
    seen: list[tuple[int, int]] = []

    async def main() -> int:
        seen.append((gc.get_threshold()[0], gc.get_freeze_count()))
        return 0

    assert run_process(main) == 0
    assert seen[0][0] == max(before[0][0], GC_YOUNG_THRESHOLD)
    assert seen[0][1] > before[1]  # what was imported is frozen
    assert (gc.get_threshold(), gc.get_freeze_count()) == before  # and given back after


def test_what_start_up_made_is_frozen_inside_a_process_run_only() -> None:
    outside = gc.get_freeze_count()
    freeze_start_up()  # a shared process (this test run) is left alone
    assert gc.get_freeze_count() == outside
    grown: list[int] = []

    async def main() -> int:
        before = gc.get_freeze_count()
        made = [[n] for n in range(500)]  # what a part makes while starting
        freeze_start_up()
        grown.append(gc.get_freeze_count() - before)
        return len(made) - 500

    assert run_process(main) == 0
    assert grown[0] >= 500
    assert gc.get_freeze_count() == outside
